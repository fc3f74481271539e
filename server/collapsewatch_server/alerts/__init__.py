"""Alerting: the rule state machine (:mod:`.engine`) and the rule catalogue helpers (:mod:`.rules`).

Nothing here talks SQL: the store loads rules and states, runs the engine and persists what it
returns, in the transaction that stores the points.
"""
