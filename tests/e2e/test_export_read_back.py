"""A run trained through the SDK into a real server process, exported as CSV and Parquet,
and read back through ``collapsewatch.Api``: the same values everywhere."""

from __future__ import annotations

import csv
import io
import math
import time
from typing import Any

import httpx
import pyarrow.parquet as pq
import torch
from torch import nn

import collapsewatch
from tests.e2e.conftest import LiveServer


def train(server: str) -> str:
    """Twelve steps of a small MLP, every step sampled."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    crit = nn.MSELoss()
    monitor = collapsewatch.watch(
        model, optimizer=opt, criterion=crit, project="export", run="mlp", server=server, every=1
    )
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    for _ in range(12):
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    monitor.finish()
    return str(monitor.run_id)


def processed(server: str, run_id: str, steps: int) -> None:
    """Wait until the server has processed every batch of the run (its loss reached the
    last step)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        series = httpx.get(f"{server}/api/v1/runs/{run_id}/series").json()
        if any(s["indicator"] == "loss" and s["points"] == steps for s in series):
            return
        time.sleep(0.1)
    raise AssertionError("the run was not processed in 60 s")


def key(row: dict[str, Any]) -> tuple[str, str, int]:
    return (row["probe"], row["indicator"], int(row["step"]))


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (math.isnan(a) and math.isnan(b))


def test_csv_and_parquet_read_back_through_the_api(live_server: LiveServer) -> None:
    run_id = train(live_server.url)
    processed(live_server.url, run_id, 12)

    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        check_exports(http, run_id)


def check_exports(http: httpx.Client, run_id: str) -> None:
    csv_response = http.get(f"/api/v1/runs/{run_id}/export", params={"format": "csv"})
    assert csv_response.status_code == 200, csv_response.text
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_response.text)))
    assert list(rows[0]) == ["probe", "indicator", "step", "value"]
    from_csv = {key(r): (float(r["value"]) if r["value"] else None) for r in rows}

    parquet_response = http.get(f"/api/v1/runs/{run_id}/export", params={"format": "parquet"})
    assert parquet_response.status_code == 200, parquet_response.text
    table = pq.read_table(io.BytesIO(parquet_response.content)).to_pylist()
    from_parquet = {key(r): r["value"] for r in table}

    # every series, every point: as many rows as the series listing counts
    listed = http.get(f"/api/v1/runs/{run_id}/series").json()
    assert len(rows) == sum(s["points"] for s in listed) == len(table)
    assert {(s["probe"], s["indicator"]) for s in listed} == {(p, i) for p, i, _ in from_csv}
    assert from_csv.keys() == from_parquet.keys()
    assert all(same(from_csv[k], from_parquet[k]) for k in from_csv)

    with collapsewatch.Api(server=str(http.base_url)) as api:
        assert [p["name"] for p in api.projects()] == ["export"]
        assert [r["run_id"] for r in api.runs("export")] == [run_id]
        assert {(s["probe"], s["indicator"]) for s in api.series(run_id)} == {
            (p, i) for p, i, _ in from_csv
        }
        for indicator in {i for _, i, _ in from_csv}:
            read = api.points(run_id, indicator)
            assert read, indicator
            for row in read:
                assert same(row["value"], from_parquet[key(row)]), (indicator, row)
        one = api.points(run_id, "loss", probe="loss")
        assert [r["step"] for r in one] == list(range(12))
        frame = api.points(run_id, "loss", probe="loss", frame=True)
        assert frame["value"].tolist() == [r["value"] for r in one]
        assert api.alerts(run_id) == []
