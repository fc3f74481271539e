"""The store: the only package that talks SQL. Each public method owns its transaction.

One class per concern, combined into :class:`Store`; they share sessions through
:class:`~collapsewatch_server.store.base.StoreBase`.
"""

from collapsewatch_server.store.outbox import OutboxStore
from collapsewatch_server.store.runs import RunStore
from collapsewatch_server.store.tokens import TokenStore


class Store(RunStore, TokenStore, OutboxStore):
    """Projects, runs, statistics, points and tokens in SQLite or Postgres."""


__all__ = ["Store"]
