"""The store: the only package that talks SQL. Each public method owns its transaction.

One class per concern, combined into :class:`Store`; they share sessions through
:class:`~collapsewatch_server.store.base.StoreBase`.
"""

from collapsewatch_server.store.alerts import AlertStore
from collapsewatch_server.store.dashboards import DashboardStore
from collapsewatch_server.store.outbox import OutboxStore
from collapsewatch_server.store.rules import RuleStore
from collapsewatch_server.store.runs import RunStore
from collapsewatch_server.store.tokens import TokenStore
from collapsewatch_server.store.webhooks import WebhookStore
from collapsewatch_server.store.windows import WindowStore


class Store(
    DashboardStore,
    RunStore,
    TokenStore,
    RuleStore,
    AlertStore,
    WebhookStore,
    OutboxStore,
    WindowStore,
):
    """Projects, runs, statistics, points, tokens, alert rules, events and states in SQLite
    or Postgres."""


__all__ = ["Store"]
