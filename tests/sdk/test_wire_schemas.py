"""The SDK ships the wire schemas only: what a training process sends and gets back. The rest
of the HTTP API's schemas live with the dashboards (``collapsewatch_web.api_schemas``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import collapsewatch

#: Every pydantic model a training environment may build: the ingest batch and its answer.
WIRE_MODELS = {
    "IngestBatch", "IngestResult", "RunAlert", "RunInfo", "ProbeInfo", "FamilyCoverage",
    "StatRecord", "ScalarColumn", "Packed",
}  # fmt: skip

_LIST_MODELS = """
import json, sys
import pydantic
import collapsewatch, collapsewatch.schemas
seen, todo = set(), [pydantic.BaseModel]
while todo:
    for sub in todo.pop().__subclasses__():
        if sub not in seen:
            seen.add(sub)
            todo.append(sub)
ours = sorted(f"{m.__module__}.{m.__qualname__}" for m in seen if m.__module__.startswith("coll"))
packages = sorted({m.split(".")[0] for m in sys.modules if m.startswith("collapsewatch")})
print(json.dumps({"models": ours, "packages": packages}))
"""


def test_import_collapsewatch_builds_only_the_wire_schemas() -> None:
    """In a fresh interpreter, ``import collapsewatch`` (and its schemas) defines the ingest
    models and no server or dashboard model, and imports neither of those packages."""
    package_parent = str(Path(collapsewatch.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_parent, *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", _LIST_MODELS], env=env, capture_output=True, text=True, check=True
    )
    found = json.loads(result.stdout)
    assert found["packages"] == ["collapsewatch"], f"imported: {found['packages']}"
    modules = {m.rsplit(".", 1)[0] for m in found["models"]}
    assert modules == {"collapsewatch.schemas"}, f"models defined outside the wire: {modules}"
    names = {m.rsplit(".", 1)[1] for m in found["models"]}
    assert names - {"_Wire"} == WIRE_MODELS, f"the SDK builds {sorted(names)}"
