"""The dashboards' reads on SQLite and Postgres (repositories and services): binned series that
keep spikes, newest points, spectra, alert state counts and run search."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from collapsewatch_server import errors
from collapsewatch_server.repositories import alert_states, point_bins, points, stat_records
from collapsewatch_server.services import alerts, rules, runs
from collapsewatch_server.services.context import ServiceContext
from tests.helpers import activation_stats, make_batch


def ingest(client: Any, batch: dict[str, Any]) -> None:
    # json.dumps, not json=: a diverged statistic is a NaN, which the SDK sends as such
    body = json.dumps(batch)
    r = client.post("/api/v1/ingest", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text


T = TypeVar("T")


def ctx_of(client: Any) -> ServiceContext:
    return client.app.state.context  # type: ignore[no-any-return]


def read(client: Any, query: Callable[..., T], *args: Any) -> T:
    """A repository read in its own session of the app's database."""
    with ctx_of(client).db.read() as s:
        return query(s, *args)


def spiky_batch(steps: int, spike_at: int, probes: tuple[str, ...] = ("b", "a")) -> dict[str, Any]:
    """``probes`` in model order (not name order); probe ``a``'s outputs all point one way at
    ``spike_at`` only: its ``simsiam_std`` (not windowed) drops from 1 to 0 for one step."""
    batch = make_batch(steps=range(0), probes=probes)
    batch["records"] = [
        {
            "probe": p,
            "kind": "activation",
            "step": s,
            "stats": {
                **activation_stats(width=4, dead=0, n=8),
                "unit_sum": [4.0] * 4 if (p == "a" and s == spike_at) else [0.0] * 4,
            },
        }
        for s in range(steps)
        for p in probes
    ]
    return batch


def test_bins_keep_a_one_step_spike_and_follow_model_order(client: Any) -> None:
    batch = spiky_batch(steps=100, spike_at=37)
    ingest(client, batch)
    bins = read(client, point_bins.indicator_bins, batch["run"]["run_id"], "simsiam_std", 10)
    assert [p.probe for p in bins.probes] == ["b", "a"], "model order, not name order"
    assert bins.start == 0
    assert bins.width == 10
    assert bins.bins == 10
    assert bins.total == 200
    a = bins.probes[1]
    assert a.index == list(range(10))
    assert sum(a.count) == 100
    assert a.low[3] == pytest.approx(0.0), "the collapse at step 37 must survive binning"
    assert a.high[3] == pytest.approx(1.0)
    assert min(v for i, v in enumerate(a.low) if i != 3) == pytest.approx(1.0)
    assert (a.first_step[3], a.last_step[3]) == (30, 39)


def test_short_series_come_back_point_for_point(client: Any) -> None:
    batch = make_batch(steps=range(0, 50, 5), probes=("fc1",))
    ingest(client, batch)
    bins = read(client, point_bins.indicator_bins, batch["run"]["run_id"], "dead_fraction", 500)
    fc1 = bins.probes[0]
    assert bins.width == 1
    assert set(fc1.count) == {1}
    assert fc1.first_step == list(range(0, 50, 5))
    assert fc1.low == fc1.high == [0.25] * 10


def test_bins_of_an_unknown_indicator_or_run_are_not_found(client: Any) -> None:
    batch = make_batch()
    ingest(client, batch)
    with pytest.raises(errors.NotFound):
        read(client, point_bins.indicator_bins, batch["run"]["run_id"], "no_such_indicator", 10)
    with pytest.raises(errors.NotFound):
        read(client, point_bins.indicator_bins, str(uuid.uuid4()), "dead_fraction", 10)


def test_latest_points_are_the_newest_of_each_series_nan_as_none(client: Any) -> None:
    batch = make_batch(steps=range(3), probes=("fc1", "fc2"))
    # fc2's last spectrum diverged: its effective rank is NaN, stored as null
    last = next(r for r in batch["records"] if r["probe"] == "fc2" and r["step"] == 2)
    last["stats"] = {**last["stats"], "eig": [math.nan] * 4}
    ingest(client, {**batch, "records": batch["records"]})
    latest = read(client, points.newest, batch["run"]["run_id"])
    by = {(p.indicator, p.probe): p for p in latest}
    assert by[("dead_fraction", "fc1")].step == 2
    assert by[("dead_fraction", "fc2")].value == 0.5
    assert by[("effective_rank", "fc2")].value is None
    assert by[("effective_rank", "fc2")].step == 2
    assert [p.probe for p in latest if p.indicator == "dead_fraction"] == ["fc1", "fc2"]
    only = read(client, points.newest, batch["run"]["run_id"], "loss")
    assert [(p.probe, p.step) for p in only] == [("loss", 2)]


def test_spectrum_is_the_nearest_sampled_step_at_or_before(client: Any) -> None:
    batch = make_batch(steps=range(0, 30, 10), probes=("fc1",))
    for record in batch["records"]:
        if record["probe"] == "fc1":
            record["stats"]["eig"] = [float(record["step"] + 1), 1.0, 0.5, 0.25]
    ingest(client, batch)
    run_id = batch["run"]["run_id"]
    spectrum = read(client, stat_records.spectrum, run_id, "fc1", 15)
    assert (spectrum.asked, spectrum.step) == (15, 10)
    assert spectrum.eigenvalues == [11.0, 1.0, 0.5, 0.25]
    assert spectrum.width == 4
    assert read(client, stat_records.spectrum, run_id, "fc1", 10_000).step == 20
    with pytest.raises(errors.NotFound):
        read(client, stat_records.spectrum, run_id, "loss", 10)  # a loss record has no spectrum
    with pytest.raises(errors.NotFound):
        read(client, stat_records.spectrum, run_id, "nope", 10)


def test_state_counts_and_firing_states_of_enabled_rules(client: Any) -> None:
    batch = make_batch(steps=range(5), probes=("fc1", "fc2", "fc3"))  # fc3: 3 of 4 units dead
    ingest(client, batch)
    run_id = uuid.UUID(batch["run"]["run_id"])
    ctx = ctx_of(client)
    counts = read(client, alert_states.counts, [run_id])
    assert [(c.indicator, c.state.value, c.severity, c.count) for c in counts] == [
        ("dead_fraction", "firing", "critical", 1)
    ]
    firing = alerts.firing_alerts(ctx, "proj")
    assert [(f.probe, f.indicator, f.run_name) for f in firing] == [
        ("fc3", "dead_fraction", "run-a")
    ]
    rule = next(r for r in rules.list_rules(ctx, "proj") if r.indicator == "dead_fraction")
    rules.set_rule_enabled(ctx, "proj", rule.id, False)
    assert read(client, alert_states.counts, [run_id]) == []
    assert alerts.firing_alerts(ctx) == []
    assert read(client, alert_states.counts, []) == []


def test_find_runs_by_part_of_the_name_any_case(client: Any) -> None:
    for name in ("ResNet-a", "vit-b", "resnet_100%"):
        ingest(client, make_batch(name=name.replace("%", "")))
    ctx = ctx_of(client)
    assert sorted(r.name for r in runs.list_runs(ctx, name="RESNET")) == ["ResNet-a", "resnet_100"]
    assert [r.name for r in runs.list_runs(ctx, name="_1")] == ["resnet_100"], "_ is no wildcard"
    assert runs.list_runs(ctx, name="%") == [], "% is no wildcard"
    with pytest.raises(errors.NotFound):
        runs.list_runs(ctx, project="nope")


def test_series_points_are_every_point_in_step_order(client: Any) -> None:
    batch = spiky_batch(steps=20, spike_at=5)
    ingest(client, batch)
    run_id = uuid.UUID(batch["run"]["run_id"])
    series = read(client, points.of_indicator, str(run_id), "simsiam_std")
    assert [s.probe for s in series] == ["b", "a"]
    assert series[1].steps == list(range(20))
    assert series[1].values[5] == pytest.approx(0.0)
    assert series[1].values[4] == pytest.approx(1.0)
    assert read(client, points.probes_by_indicator, [run_id])["simsiam_std"] == ["b", "a"]


def test_rows_split_into_each_series_run() -> None:
    import numpy as np

    assert point_bins.series_runs(np.array([], dtype=np.int64)) == []
    assert point_bins.series_runs(np.array([7])) == [(7, 0, 1)]
    assert point_bins.series_runs(np.array([3, 3, 5, 5, 5, 2])) == [
        (3, 0, 2),
        (5, 2, 5),
        (2, 5, 6),
    ]
