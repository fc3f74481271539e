"""The OpenAPI document, completed with what the routes' signatures cannot say: the answers
every operation of a kind gives (404 for an unknown project or resource, 400 for a body that
is not JSON, 415 for one not declared JSON), the characters path and query parameters refuse,
and the ingest body (read raw, to bound and gunzip it before parsing)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from collapsewatch.schemas import IngestBatch
from collapsewatch.schemas.bounds import NO_CONTROL_PATTERN

INGEST_PATH = "/api/v1/ingest"
_BODY_METHODS = ("post", "put", "patch")
_COMPONENT_REF = "#/components/schemas/{model}"


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            complete(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> None:
    """Add the answers, parameter patterns and the ingest body to ``document`` in place."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for path, item in document["paths"].items():
        for method, operation in item.items():
            parameters = operation.get("parameters", [])
            responses = operation.setdefault("responses", {})
            for parameter in parameters:
                if parameter.get("in") in ("path", "query"):
                    _forbid_control_characters(parameter.get("schema", {}))
            names = {p["name"] for p in parameters}
            if "{" in path or "project" in names:
                responses.setdefault("404", {"description": "unknown project, run or resource"})
            if method in _BODY_METHODS:
                responses.setdefault("400", {"description": "the body is not JSON"})
                responses.setdefault(
                    "415", {"description": "the request is not Content-Type: application/json"}
                )
            if parameters or method in _BODY_METHODS:
                responses.setdefault("422", {"description": "invalid input, naming the field"})
    schema = IngestBatch.model_json_schema(ref_template=_COMPONENT_REF)
    components.update(schema.pop("$defs", {}))
    components["IngestBatch"] = schema
    document["paths"][INGEST_PATH]["post"]["requestBody"] = {
        "required": True,
        "description": "one batch; may be sent with Content-Encoding: gzip",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestBatch"}}},
    }


def _forbid_control_characters(schema: dict[str, Any]) -> None:
    for option in [schema, *schema.get("anyOf", [])]:
        if option.get("type") == "string" and "pattern" not in option and "format" not in option:
            option["pattern"] = NO_CONTROL_PATTERN
