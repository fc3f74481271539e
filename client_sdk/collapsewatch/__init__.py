"""collapsewatch: watch a PyTorch model while it trains and raise the alarm when part of it
collapses.

Two lines in a training script::

    import collapsewatch
    collapsewatch.watch(model, optimizer=optimizer, criterion=criterion)

Importing this package imports neither torch nor any server dependency; torch is used from the
model handed to :func:`watch`.
"""

from collapsewatch._api import finish, watch
from collapsewatch._version import __version__
from collapsewatch.monitor import Monitor
from collapsewatch.reader import Api, ApiError

__all__ = ["Api", "ApiError", "Monitor", "__version__", "finish", "watch"]
