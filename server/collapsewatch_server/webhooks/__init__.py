"""Webhooks: signing, payload formats, the SSRF guard, the deliverer and its worker loop.

Alert events reach receivers through the outbox (``deliveries``): the rules engine writes a
delivery per matching webhook in the event's transaction, and the worker of any server process
claims due deliveries, sends them signed (Standard Webhooks) and records every attempt.
"""
