"""Dashboard rough edges of issue 13, in a real browser against the real server."""

from __future__ import annotations

import json
import time
import uuid

import httpx

from tests.e2e import browser
from tests.e2e.browser import Tab, batch, chart_ready, ingest, series_indicators, wait_until
from tests.e2e.conftest import LiveServer
from tests.helpers import JSON

pytestmark = browser.pytestmark


def wait_processed(server: LiveServer, run_id: str, indicator: str) -> None:
    deadline = time.monotonic() + 30
    while indicator not in series_indicators(server, run_id):
        assert time.monotonic() < deadline, f"{indicator} never arrived"
        time.sleep(0.1)


def test_a_step_link_shows_its_card_title_below_the_sticky_bar(
    live_server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    run_id = str(uuid.uuid4())
    ingest(live_server, batch(run_id, range(0, 80, 2)))
    wait_processed(live_server, run_id, "loss")
    page.set_viewport_size({"width": 1360, "height": 700})
    page.goto(f"{live_server.url}/runs/{run_id}?step=40&indicator=loss")
    wait_until(page, "document.querySelector('#chart-loss-card.focused') !== null", 10_000)
    page.wait_for_timeout(500)
    geometry = page.evaluate(
        """() => {
            const bar = document.querySelector('.family-nav').getBoundingClientRect();
            const title = document.querySelector('#chart-loss-card h3').getBoundingClientRect();
            return {bar: bar.bottom, top: title.top, bottom: title.bottom, scrolled: scrollY};
        }"""
    )
    assert geometry["scrolled"] > 0, "the page did not scroll to the card"
    assert geometry["top"] >= geometry["bar"], geometry  # not under the sticky bar
    assert geometry["bottom"] <= 700
    assert tab.problems == [], tab.problems


def test_worst_layers_leave_out_indicators_whose_rules_are_disabled(
    live_server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    setup = str(uuid.uuid4())
    ingest(live_server, batch(setup, range(0, 2), project="quiet", name="setup"))
    wait_processed(live_server, setup, "dead_fraction")
    rules = httpx.get(f"{live_server.url}/api/v1/projects/quiet/rules").json()
    dead_rules = [r for r in rules if r["indicator"] == "dead_fraction"]
    assert dead_rules
    for rule in dead_rules:
        url = f"{live_server.url}/api/v1/projects/quiet/rules/{rule['id']}/disable"
        assert httpx.post(url, headers=JSON).status_code == 200
    run_id = str(uuid.uuid4())
    ingest(live_server, batch(run_id, range(0, 40, 2), project="quiet"))  # fc2 loses its units
    wait_processed(live_server, run_id, "dead_fraction")
    page.goto(f"{live_server.url}/runs/{run_id}")
    rows = page.locator("#worst-rows tr").evaluate_all("rs => rs.map(r => r.dataset.key)")
    assert not [key for key in rows if key.startswith("dead_fraction|")], rows
    assert "0 open alerts" in page.inner_text("#open-alerts")
    card = page.get_attribute("#chart-dead_fraction-card", "class") or ""
    assert "severity-critical" not in card and "severity-warn" not in card, card
    assert tab.problems == [], tab.problems


def test_compare_opens_on_the_layer_where_the_runs_differ_most(
    live_server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    collapsed, control = str(uuid.uuid4()), str(uuid.uuid4())
    ingest(live_server, batch(collapsed, range(0, 40, 2), name="collapsed"))
    healthy = batch(control, range(0, 40, 2), name="control")
    for record in healthy["records"]:
        if record["probe"] == "fc2":  # the control keeps fc2's units; fc1, fc3, out alike
            record["stats"] = next(
                r["stats"]
                for r in batch(control, range(record["step"], record["step"] + 1))["records"]
                if r["probe"] == "fc1"
            )
    ingest(live_server, healthy)
    wait_processed(live_server, collapsed, "dead_fraction")
    wait_processed(live_server, control, "dead_fraction")
    page.goto(f"{live_server.url}/compare?runs={collapsed},{control}")
    wait_until(page, "!!document.getElementById('compare-chart').data", 10_000)
    assert page.eval_on_selector("#compare-probe", "s => s.value") == "fc2"
    lines = page.evaluate("document.getElementById('compare-chart').data.map(t => t.y.at(-1))")
    assert len(lines) == 2 and max(lines) - min(lines) > 0.5, lines  # visibly apart
    assert tab.problems == [], tab.problems


def test_a_loss_that_turns_nan_is_marked_on_the_loss_chart(
    live_server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    run_id = str(uuid.uuid4())
    body = batch(run_id, range(0, 30, 2))
    for record in body["records"]:
        if record["probe"] == "loss" and record["step"] >= 20:
            record["stats"] = {"mean": float("nan"), "max": float("nan"), "count": 10.0}
    r = httpx.post(
        f"{live_server.url}/api/v1/ingest",
        content=json.dumps(body).encode(),  # NaN as the SDK sends it
        headers=JSON,
    )
    assert r.status_code == 202, r.text
    wait_processed(live_server, run_id, "loss")
    page.goto(f"{live_server.url}/runs/{run_id}?step=20&indicator=loss")
    wait_until(page, chart_ready("chart-loss"), 15_000)
    marks = page.evaluate(
        "document.getElementById('chart-loss').data.find(t => t.uid === 'nonfinite')"
    )
    assert marks is not None and marks["x"] == [20, 22, 24, 26, 28]
    assert page.locator("#chart-loss .scatterlayer .trace .point").count() >= 5
    assert "NaN at step 20" in page.inner_text("#chart-loss")
    assert tab.problems == [], tab.problems


def test_warm_ups_show_in_the_rules_table_and_the_editor(live_server: LiveServer, tab: Tab) -> None:
    page = tab.page
    setup = str(uuid.uuid4())
    ingest(live_server, batch(setup, range(0, 2), project="warm", name="setup"))
    wait_processed(live_server, setup, "dead_fraction")
    rule = {"name": "late dead", "indicator": "dead_fraction", "condition": "above",
            "threshold": 0.4, "warmup_steps": 150}  # fmt: skip
    r = httpx.post(f"{live_server.url}/api/v1/projects/warm/rules", json=rule)
    assert r.status_code == 201, r.text
    page.goto(f"{live_server.url}/alerts?project=warm")
    row = page.locator("#rules-rows tr", has_text="late dead")
    assert row.locator("td.warmup").inner_text() == "until step 150 or a healthy point"
    assert page.locator("#hint-warmup_steps").is_visible()
    row.locator(".toggle-rule").click()  # the table is redrawn by alerts.js: same words
    wait_until(
        page,
        "[...document.querySelectorAll('#rules-rows tr.disabled td.warmup')]"
        ".some(td => td.textContent === 'until step 150 or a healthy point')",
        5_000,
    )
    assert tab.problems == [], tab.problems
