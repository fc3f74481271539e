"""Alerting, pure: the rule state machine (:mod:`.engine`), a project's rules applied to a
batch of points (:mod:`.evaluation`), the default rule pack (:mod:`.default_rules`) and the
replay of a rule over stored points (:mod:`.backtest`).

Nothing here talks SQL: the ingest service loads rules and states, runs the engine and
persists what it returns, in the transaction that stores the points.
"""
