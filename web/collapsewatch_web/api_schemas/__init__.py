"""Schemas of the HTTP API beyond ingest: runs, the indicator catalogue, ingest tokens, alert
rules and events, webhooks, and the dashboards' JSON (charts, health, back-tests).

Why they live here, in the web package: the server answers with them and the dashboards render
them, and the import direction is ``collapsewatch`` <- ``collapsewatch_web`` <-
``collapsewatch_server``, so this is the lowest package both can import. The SDK
(``collapsewatch.schemas``) keeps only what a training process sends (the ingest batch and its
answer): ``import collapsewatch`` never builds these. Only pydantic is imported here.

One module per part of the API; import from the module (``api_schemas.runs``), there are no
re-exports.
"""
