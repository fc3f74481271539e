"""The run page in a real browser against the real ``collapsewatch serve``: charts render,
grow live from the SSE stream without a reload, and the heatmap shows which layer collapsed
when, with its alert arriving live."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from collapsewatch_web.figures import DARK
from tests.e2e.browser import (
    LIVE_TIMEOUT_MS,
    PROBES,
    WIDTH,
    Tab,
    batch,
    chart_ready,
    ingest,
    layer_stats,
    trace_names,
    wait_until,
)
from tests.e2e.conftest import LiveServer


def test_run_page_renders_charts_and_grows_live(live_server: LiveServer, tab: Tab) -> None:
    page = tab.page
    run_id = str(uuid.uuid4())
    ingest(live_server, batch(run_id, range(0, 200, 4)))

    page.goto(f"{live_server.url}/runs/{run_id}")
    # the first family's chart loads as soon as the page shows it; the rest wait to be seen
    wait_until(page, chart_ready("chart-dead_fraction"), 15_000)
    assert trace_names(page, "chart-dead_fraction") == list(PROBES)
    # its figures were fetched once, while the page's scripts loaded (the head's preload)
    fetched = page.evaluate(
        "performance.getEntriesByType('resource')"
        ".filter(e => e.name.endsWith('/figures/dead_fraction')).map(e => e.initiatorType)"
    )
    assert fetched == ["link"]
    # reloaded, the page draws the figures it has: the server answers 304 (the ETag matches)
    page.reload()
    wait_until(page, chart_ready("chart-dead_fraction"), 15_000)
    sizes = page.evaluate(
        "performance.getEntriesByType('resource')"
        ".filter(e => e.name.endsWith('/figures/dead_fraction'))"
        ".map(e => [e.transferSize, e.encodedBodySize])"
    )
    assert len(sizes) == 1 and 0 < sizes[0][0] < 1000 < sizes[0][1], sizes
    assert trace_names(page, "chart-dead_fraction") == list(PROBES)
    assert page.evaluate("document.getElementById('chart-dead_fraction').data[1].x.length") == 50
    markers = page.evaluate(
        "document.getElementById('chart-dead_fraction').data.find(t => t.uid === 'alerts')"
    )
    assert len(markers["x"]) == 1, "the default rule fired once, on fc2"
    assert markers["y"][0] > 0.5
    assert page.evaluate("document.getElementById('chart-loss').data") is None, "not seen yet"
    # the dead-unit card is flagged, and fc2 leads the worst layers at the top
    assert "severity-critical" in (page.get_attribute("#chart-dead_fraction-card", "class") or "")
    assert page.inner_text("#worst-rows tr:first-child td.mono") == "fc2"
    assert "1 critical" in page.inner_text("#health-families")
    page.locator("#chart-loss-card").scroll_into_view_if_needed()
    wait_until(page, chart_ready("chart-loss"), 10_000)
    page.evaluate("window.scrollTo(0, 0)")

    # a later step, and a probe the page has not seen yet, arrive while the page is open
    ingest(live_server, batch(run_id, range(400, 401), probes=(*PROBES, "head")))
    wait_until(
        page,
        "document.getElementById('chart-dead_fraction').data[1].x.includes(400)",
        LIVE_TIMEOUT_MS,
    )
    assert trace_names(page, "chart-dead_fraction") == [*PROBES, "head"]
    fc2 = page.evaluate("document.getElementById('chart-dead_fraction').data[1]")
    assert fc2["x"][-1] == 400
    assert fc2["y"][-1] == pytest.approx(49 / WIDTH)
    latest_fc2 = "#chart-dead_fraction-card .latest li[data-probe='fc2'] .value"
    assert page.inner_text(latest_fc2) == "0.766"
    wait_until(
        page, "document.getElementById('run-last-step').textContent === '400'", LIVE_TIMEOUT_MS
    )
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "reloaded"
    assert tab.problems == [], f"browser errors: {tab.problems}"


def test_a_run_of_more_layers_than_colours_draws_the_worst_and_a_heatmap_of_all(
    live_server: LiveServer, browser: Any
) -> None:
    """12 layers, fc2 and fc3 losing units: the line chart draws 10 (a colour each) and says
    so; the heatmap has all 12; a live point of a layer without a line adds none and lands in
    the heatmap. In the dark scheme, which the chart takes before it is drawn."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, color_scheme="dark")
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    layers = ("fc2", "fc3", *(f"encoder.layers.{i}.mlp" for i in range(10)))
    run_id = str(uuid.uuid4())
    ingest(live_server, batch(run_id, range(0, 40, 4), probes=layers))
    page.goto(f"{live_server.url}/runs/{run_id}")
    wait_until(page, chart_ready("chart-dead_fraction"), 15_000)

    drawn = trace_names(page, "chart-dead_fraction")
    assert len(drawn) == 10 and drawn[:2] == ["fc2", "fc3"], drawn
    left_out = [p for p in layers if p not in drawn]
    lines = page.evaluate("document.getElementById('chart-dead_fraction').layout")
    notes = [a["text"] for a in lines["annotations"]]
    assert "the 10 worst of 12 layers; every layer in the heatmap" in notes
    assert lines["font"]["color"] == DARK.text, "the dark scheme's colours"
    heat = "document.getElementById('chart-dead_fraction-heat').data[0]"
    assert page.evaluate(f"Array.from({heat}.y)") == list(layers)
    # the left margin, estimated on the server, holds the layer names
    cut = page.evaluate(
        "(() => { const left = document.getElementById('chart-dead_fraction-heat')"
        ".getBoundingClientRect().left; return Array.from(document.querySelectorAll("
        "'#chart-dead_fraction-heat .ytick text')).filter(t => t.textContent &&"
        " t.getBoundingClientRect().left < left).map(t => t.textContent); })()"
    )
    assert cut == [], f"layer names cut at the heatmap's left edge: {cut}"

    ingest(live_server, batch(run_id, range(400, 401), probes=layers))
    wait_until(
        page,
        "document.getElementById('chart-dead_fraction').data[0].x.includes(400)",
        LIVE_TIMEOUT_MS,
    )
    assert trace_names(page, "chart-dead_fraction") == drawn, "no line for the others"
    row = layers.index(left_out[0])
    wait_until(page, f"{heat}.z[{row}][{heat}.x.length - 1] !== null", LIVE_TIMEOUT_MS)
    assert page.evaluate(f"{heat}.x[{heat}.x.length - 1]") <= 400
    assert problems == [], f"browser errors: {problems}"
    context.close()


def collapse_batch(run_id: str, steps: range, collapse_at: int) -> dict[str, Any]:
    """fc3 loses every unit from ``collapse_at`` on; the other layers stay alive."""
    body = batch(run_id, steps, name="collapse-fc3", project="heat")
    for record in body["records"]:
        if record["kind"] == "activation":
            dead = WIDTH if record["probe"] == "fc3" and record["step"] >= collapse_at else 0
            record["stats"] = layer_stats(dead, 0.5, 0.8)
    return body


def test_heatmap_shows_which_layer_collapsed_when_and_the_alert_arrives_live(
    live_server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    run_id, collapse_at = str(uuid.uuid4()), 100
    ingest(live_server, collapse_batch(run_id, range(0, collapse_at, 2), collapse_at))
    page.goto(f"{live_server.url}/runs/{run_id}")
    wait_until(page, chart_ready("chart-dead_fraction"), 15_000)
    assert "0 open alerts" in page.inner_text("#open-alerts")
    assert page.inner_text("#recent-alerts") == ""

    # the collapse arrives while the page is open: points, then the alert, without a reload
    ingest(live_server, collapse_batch(run_id, range(collapse_at, 200, 2), collapse_at))
    wait_until(page, "document.querySelectorAll('#recent-alerts li').length > 0", LIVE_TIMEOUT_MS)
    assert "fc3" in page.inner_text("#recent-alerts")
    wait_until(
        page,
        "document.querySelector('#health-families [data-family=dead_units]')"
        ".classList.contains('state-critical')",
        LIVE_TIMEOUT_MS,
    )
    wait_until(
        page,
        "(document.getElementById('chart-dead_fraction').data.find(t => t.uid === 'alerts') || "
        "{x: []}).x.length > 0",
        LIVE_TIMEOUT_MS,
    )
    heat = page.evaluate(
        "(() => { const t = document.getElementById('chart-dead_fraction-heat').data[0];"
        " return {x: Array.from(t.x), y: Array.from(t.y), z: t.z.map(r => Array.from(r))}; })()"
    )
    assert heat["y"] == list(PROBES), "layers in model order"
    fc3 = heat["y"].index("fc3")
    # dead units are counted over a window of 5 records: fully dead 4 records after the step
    settled = collapse_at + 2 * 4
    for row, values in enumerate(heat["z"]):
        for step, value in zip(heat["x"], values, strict=True):
            if value is None:
                continue
            if row == fc3 and step >= settled:
                assert value == pytest.approx(1.0), (step, value)
            elif row != fc3 or step < collapse_at:
                assert value < 0.1, (heat["y"][row], step, value)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "reloaded"
    assert tab.problems == [], f"browser errors: {tab.problems}"
