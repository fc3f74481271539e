"""Run tags: set by ``watch(tags=...)``, replaced through the API, filtered on."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import collapsewatch
from collapsewatch import runinfo
from tests.helpers import make_batch
from tests.server.test_read_api import ingest


def tagged_batch(name: str, tags: list[str]) -> dict[str, Any]:
    batch = make_batch(name=name)
    batch["run"]["tags"] = tags
    return batch


def test_tags_from_the_wire_are_listed_and_filtered(client: Any) -> None:
    ingest(client, tagged_batch("a", ["baseline", "lr-sweep"]))
    ingest(client, tagged_batch("b", ["lr-sweep"]))
    ingest(client, make_batch(name="c"))  # an SDK without tags: no "tags" key at all
    runs = {r["name"]: r["tags"] for r in client.get("/api/v1/runs").json()}
    assert runs == {"a": ["baseline", "lr-sweep"], "b": ["lr-sweep"], "c": []}
    swept = client.get("/api/v1/runs", params={"tag": "lr-sweep"}).json()
    assert sorted(r["name"] for r in swept) == ["a", "b"]
    assert [
        r["name"] for r in client.get("/api/v1/overview", params={"tag": "baseline"}).json()
    ] == ["a"]
    page = client.get("/", params={"tag": "baseline"}).text
    assert ">a</a>" in page and ">b</a>" not in page


def test_tags_are_replaced_through_the_api(client: Any) -> None:
    batch = tagged_batch("a", ["baseline"])
    ingest(client, batch)
    url = f"/api/v1/runs/{batch['run']['run_id']}"
    r = client.put(f"{url}/tags", json={"tags": ["v2", "ablation", "v2"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"tags": ["ablation", "v2"]}
    assert client.get(url).json()["tags"] == ["ablation", "v2"]
    # a later batch of the run does not bring the first tags back
    ingest(client, tagged_batch("a", ["baseline"]) | {"run": batch["run"]})
    assert client.get(url).json()["tags"] == ["ablation", "v2"]
    bad = client.put(f"{url}/tags", json={"tags": ["has space"]})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "tags", 0]
    assert client.get(url).json()["tags"] == ["ablation", "v2"]


def test_watch_sends_its_tags(client: Any) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = collapsewatch.watch(
        model, optimizer=opt, criterion=nn.MSELoss(), project="tags", run="tagged",
        server="http://testserver", http_client=client, every=1, tags=["baseline", "gpu:a100"],
    )  # fmt: skip
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(2):
        opt.zero_grad()
        nn.MSELoss()(model(x), y).backward()
        opt.step()
    monitor.finish()
    run = client.get(f"/api/v1/runs/{monitor.run_id}").json()
    assert run["tags"] == ["baseline", "gpu:a100"]


def test_bad_tags_are_refused_by_watch_before_training() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="invalid tag 'no spaces'"):
        collapsewatch.watch(model, tags=["ok", "no spaces"], server="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="list of strings"):
        collapsewatch.watch(model, tags="baseline", server="http://127.0.0.1:9")  # type: ignore[arg-type]


def test_a_run_without_tags_sends_no_tags_field() -> None:
    """Servers older than the field refuse unknown fields: it is left out unless set."""
    import uuid
    from datetime import UTC, datetime

    common = {"run_id": uuid.uuid4(), "project": "p", "name": "r", "config": {},
              "started_at": datetime.now(UTC), "probes": []}  # fmt: skip
    assert "tags" not in runinfo.build(**common)
    assert runinfo.build(**common, tags=["a"])["tags"] == ["a"]
