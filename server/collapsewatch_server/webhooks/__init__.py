"""Webhooks, the sending side (no database): signing, payload formats, the SSRF guard and the
deliverer that POSTs one delivery and classifies the answer.

Alert events reach receivers through the outbox (``deliveries``): the ingest service writes a
delivery per matching webhook in the event's transaction, and the worker of any server process
(:mod:`collapsewatch_server.worker`, through :mod:`collapsewatch_server.services.deliveries`)
claims due deliveries, sends them signed (Standard Webhooks) and records every attempt.
"""
