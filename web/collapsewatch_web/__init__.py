"""The dashboards: figure builders, page rendering, templates and static files.

Knows the wire schemas (``collapsewatch.schemas``) and nothing of the database: the server's
page routes fetch data through the store and hand schemas to the functions here.
"""
