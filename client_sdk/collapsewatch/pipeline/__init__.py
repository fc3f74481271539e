"""The path a reduced statistic takes to the server.

``sender`` (the background worker the monitor hands records to) encodes batches with ``wire``
and posts them; what the server does not take goes to the ``spool`` on disk, and ``replay``
sends spooled batches again, for the sender and for ``collapsewatch sync`` alike. ``ledger``
counts where every record is, ``notices`` tells the user, ``backoff`` says when to retry.
"""
