"""Services: the server's use cases, one function each, readable top to bottom.

A service opens the transaction of its use case on :class:`~.context.ServiceContext`'s
database, calls down into the repositories (SQL), the pure domain modules (indicators, alerts,
webhooks) and the dashboards' builders (``collapsewatch_web``), and returns an API schema.
Routes, the CLI and the webhook worker call services; services never call them back.
"""
