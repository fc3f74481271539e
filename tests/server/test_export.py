"""The run export: long format, filters, errors and Parquet's optional dependency."""

from __future__ import annotations

import csv
import io
import sys
import uuid
from typing import Any

import pytest

from collapsewatch_server import errors
from tests.helpers import make_batch
from tests.server.test_read_api import ingest


def rows(client: Any, run_id: str, **params: Any) -> list[dict[str, str]]:
    r = client.get(f"/api/v1/runs/{run_id}/export", params={"format": "csv", **params})
    assert r.status_code == 200, r.text
    return list(csv.DictReader(io.StringIO(r.text)))


def test_csv_has_every_series_in_long_format(client: Any) -> None:
    batch = make_batch(steps=range(5))
    batch["records"].append(
        {"probe": "loss", "kind": "loss", "step": 5, "stats": {"mean": float("nan"), "count": 1.0}}
    )
    ingest(client, batch)
    run_id = batch["run"]["run_id"]
    got = rows(client, run_id)
    series = client.get(f"/api/v1/runs/{run_id}/series").json()
    assert len(got) == sum(s["points"] for s in series)
    loss = [(r["step"], r["value"]) for r in got if r["indicator"] == "loss"]
    assert loss == [("0", "1.0"), ("1", "0.5"), ("2", repr(1 / 3)), ("3", "0.25"), ("4", "0.2"),
                    ("5", "")]  # fmt: skip
    r = client.get(f"/api/v1/runs/{run_id}/export", params={"indicator": "loss", "probe": "loss"})
    assert f'filename="{run_id}-loss-loss.csv"' in r.headers["content-disposition"]
    dead = rows(client, run_id, indicator="dead_fraction", probe="fc2")
    assert {(r["probe"], r["indicator"]) for r in dead} == {("fc2", "dead_fraction")}
    assert [r["value"] for r in dead] == ["0.5"] * 5


def test_export_errors_say_what_is_wrong(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = uuid.uuid4()
    r = client.get(f"/api/v1/runs/{missing}/export")
    assert r.status_code == 404 and str(missing) in r.json()["detail"]
    batch = make_batch()
    ingest(client, batch)
    url = f"/api/v1/runs/{batch['run']['run_id']}/export"
    assert client.get(url, params={"format": "xlsx"}).status_code == 422
    r = client.get(url, params={"indicator": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    # a server without pyarrow: the import fails, the answer says which extra to install
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    r = client.get(url, params={"format": "parquet"})
    assert r.status_code == 501
    assert r.json()["detail"] == errors.PARQUET_NEEDS_PYARROW
