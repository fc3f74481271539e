"""The dashboards: the HTTP API's schemas beyond ingest (:mod:`.api_schemas`), figure
builders, judgements of values against thresholds, page rendering, templates and static files.

Knows schemas, templates and figures, never the database: the server's services read the data
and hand schemas to the functions here.
"""
