"""Schemathesis over the API's own OpenAPI document, on SQLite and Postgres: a few generated
requests per operation, valid and invalid, each answered without 5xx, with a documented status,
a body matching the documented schema, and invalid input refused.

Bounded (``FUZZ_EXAMPLES`` examples per operation and mode, default 5) so it runs with every
``make test``; ``make fuzz`` runs it alone with more. Positive requests the schema cannot tell
from invalid ones (cross-field rules, URLs that must be reachable web addresses, run-id lists in
one string) may be refused with a 422 naming the field: those operations skip only the
"schema-valid request accepted" check.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from collapsewatch_server import create_app
from collapsewatch_server.config import Settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
#: Operations whose schema-valid bodies can still break a rule only the server states, and why.
SEMANTIC_422 = {
    "POST /api/v1/projects/{project}/rules": "condition needs its fields; known indicators",
    "PUT /api/v1/projects/{project}/rules/{rule_id}": "the merged rule is judged whole",
    "POST /api/v1/projects/{project}/rules/backtest": "the rule's cross-field rules",
    "POST /api/v1/projects/{project}/webhooks": "url must be an absolute public http(s) URL",
    "PUT /api/v1/projects/{project}/webhooks/{webhook_id}": "the same url check",
    "GET /api/v1/compare": "runs is a comma-separated list of UUIDs in one string",
    "POST /api/v1/projects/{project}/silences": "exactly one of ends_at and duration_s",
    # the generator does not follow propertyNames: it makes statistic names the schema refuses
    "POST /api/v1/ingest": "statistic and coverage names (JSON-schema propertyNames)",
}
JSON = {"content-type": "application/json"}  # bodyless POSTs too: the server's CSRF rule


def fuzz_operation(operation: Any, mode: GenerationMode) -> None:
    excluded = [positive_data_acceptance] if operation.label in SEMANTIC_422 else []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=JSON, excluded_checks=excluded)

    run()


@pytest.mark.timeout(900)  # a loaded machine; `make fuzz` lifts the limit
def test_every_operation_keeps_its_description(db_url: str) -> None:
    app = create_app(Settings(db_url=db_url, worker=False))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    document = app.openapi()
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        described = document["paths"][operation.path][operation.method.lower()]
        takes_input = "requestBody" in described or any(
            p["in"] in ("path", "query") for p in described.get("parameters", [])
        )
        # nothing to make invalid in an operation without input
        for mode in GenerationMode if takes_input else [GenerationMode.POSITIVE]:
            try:
                fuzz_operation(operation, mode)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
                failures[f"{operation.label} [{mode.value}]"] = str(exc)[:2000]
    assert operations >= 30
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


@pytest.mark.parametrize("path", ["/openapi.json"])
def test_the_document_states_the_edges(client: Any, path: str) -> None:
    document = client.get(path).json()
    ingest = document["paths"]["/api/v1/ingest"]["post"]
    assert ingest["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/IngestBatch"
    )
    assert "415" in ingest["responses"]
    rule = document["paths"]["/api/v1/projects/{project}/rules/{rule_id}"]["get"]
    assert "404" in rule["responses"]
    by_name = {p["name"]: p["schema"] for p in rule["parameters"]}
    assert by_name["rule_id"]["maximum"] == 2**31 - 1
    assert "pattern" in by_name["project"]
