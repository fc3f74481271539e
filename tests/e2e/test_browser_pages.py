"""The runs list, the alerts page's rule editor and back-test, the settings page (tokens, a
webhook test to a loopback receiver) in a real browser; with UPDATE_SCREENSHOTS=1 also the
screenshots of docs/screenshots/, from the demo trained through the SDK."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.browser import (
    DOCS_SCREENSHOTS,
    LIVE_TIMEOUT_MS,
    UPDATE_SCREENSHOTS,
    Tab,
    batch,
    chart_ready,
    ingest,
    trace_names,
    wait_until,
)
from tests.e2e.conftest import LiveServer
from tests.webhook_support import Answer, Receiver


def test_runs_page_lists_runs_and_picks_up_new_ones(live_server: LiveServer, tab: Tab) -> None:
    page = tab.page
    t0 = datetime.now(UTC) - timedelta(hours=3)
    runs = [
        ("relu-lr0.001", "demo", "finished", t0),
        ("vit-s16-byol", "ssl", "crashed", t0 + timedelta(minutes=40)),
        ("relu-lr0.1", "demo", None, t0 + timedelta(hours=1)),
    ]
    for name, project, status, started in runs:
        ingest(
            live_server,
            batch(
                str(uuid.uuid4()),
                range(0, 300, 30),
                name=name,
                project=project,
                status=status,
                started_at=started,
            ),
        )
    page.goto(live_server.url + "/")
    names = page.eval_on_selector_all(
        "#runs-table tbody a.run-name", "els => els.map(e => e.textContent)"
    )
    assert names == ["relu-lr0.1", "vit-s16-byol", "relu-lr0.001"], "newest first"
    # fc2 of every run loses its units: each row says so in its dead-units chip
    chips = page.eval_on_selector_all(
        "#runs-table tbody td.health .chip.state-critical", "els => els.map(e => e.title)"
    )
    assert chips == ["Dead units: critical, 1 firing"] * 3

    # tick two runs and compare them: a line per run on one indicator and layer
    page.check("#runs-table tbody tr:nth-child(1) .pick")
    page.check("#runs-table tbody tr:nth-child(3) .pick")
    page.click("#compare-button")
    page.wait_for_url("**/compare?runs=*")
    wait_until(page, "!!document.getElementById('compare-chart').data", 10_000)
    assert trace_names(page, "compare-chart") == ["relu-lr0.1", "relu-lr0.001"]
    page.select_option("#compare-probe", "fc2")
    wait_until(
        page,
        "Math.max(...document.getElementById('compare-chart').data[0].y) > 0.5",
        5_000,
    )
    assert "probe=fc2" in page.url, "the choice is in the URL, to share"
    page.go_back()

    ingest(live_server, batch(str(uuid.uuid4()), range(1), name="resnet18-new", project="vision"))
    wait_until(
        page,
        "document.querySelector('#runs-table tbody a.run-name').textContent === 'resnet18-new'",
        10_000,  # the table refreshes every 5 s
    )
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1, "reloaded"
    assert tab.problems == [], f"browser errors: {tab.problems}"


def test_rule_editor_creates_a_rule_the_api_lists_and_back_tests_it(
    live_server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    run_id = str(uuid.uuid4())
    ingest(live_server, batch(run_id, range(0, 200, 4)))
    page.goto(f"{live_server.url}/alerts?project=demo")
    assert "fc2" in page.inner_text("#firing-table")

    page.fill("#rule-name", "fc2 losing units")
    page.select_option("#rule-indicator", "dead_fraction")
    page.select_option("#rule-condition", "outside")
    page.fill("#rule-low", "0.6")
    page.fill("#rule-high", "0.1")
    page.click("#rule-save")
    # the API's 422 is shown next to the field it is about, and nothing is stored
    wait_until(page, "document.getElementById('err-low').textContent !== ''", LIVE_TIMEOUT_MS)
    assert "'low' must not be greater than 'high'" in page.inner_text("#err-low")
    page.fill("#rule-low", "0")
    page.fill("#rule-high", "0.3")
    page.fill("#rule-pending_points", "2")
    page.select_option("#rule-severity", "critical")

    # back-test the unsaved rule on the run: it would have fired on fc2 only
    page.select_option("#backtest-run", run_id)
    page.click("#backtest-button")
    wait_until(page, "!!document.getElementById('backtest-chart').data", LIVE_TIMEOUT_MS)
    assert "fired 1 time(s)" in page.inner_text("#backtest-summary")
    assert "fc2" in page.inner_text("#backtest-events")
    markers = page.evaluate(
        "document.getElementById('backtest-chart').data.find(t => t.uid === 'alerts').x"
    )
    assert len(markers) == 1

    page.click("#rule-save")
    wait_until(page, "document.getElementById('rule-saved').textContent !== ''", LIVE_TIMEOUT_MS)
    rules = httpx.get(f"{live_server.url}/api/v1/projects/demo/rules", timeout=10).json()
    created = next(r for r in rules if r["name"] == "fc2 losing units")
    assert (created["condition"], created["low"], created["high"]) == ("outside", 0.0, 0.3)
    assert (created["pending_points"], created["severity"]) == (2, "critical")
    assert "fc2 losing units" in page.inner_text("#rules-rows")

    # disable it from its row: the API says so
    page.click(f"#rules-rows tr[data-rule-id='{created['id']}'] .toggle-rule")
    wait_until(
        page,
        f"document.querySelector(\"tr[data-rule-id='{created['id']}']\")"
        ".classList.contains('disabled')",
        LIVE_TIMEOUT_MS,
    )
    rule = httpx.get(
        f"{live_server.url}/api/v1/projects/demo/rules/{created['id']}", timeout=10
    ).json()
    assert rule["enabled"] is False
    # the browser logs the 422 it was shown; nothing else went wrong
    unexpected = [p for p in tab.problems if "status of 422" not in p]
    assert unexpected == [], f"browser errors: {unexpected}"


def test_settings_page_creates_tokens_and_a_webhook_whose_test_reaches_the_receiver(
    live_server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    page.on("dialog", lambda dialog: dialog.accept())  # "Revoke this token?"
    ingest(live_server, batch(str(uuid.uuid4()), range(0, 20, 4)))
    page.goto(f"{live_server.url}/projects/demo/settings")

    page.fill("#token-name", "cluster-a")
    page.click("#token-form button[type=submit]")
    wait_until(page, "!document.getElementById('token-secret').hidden", LIVE_TIMEOUT_MS)
    secret = page.inner_text("#token-secret-value")
    tokens = httpx.get(f"{live_server.url}/api/v1/projects/demo/tokens", timeout=10).json()
    assert [(t["name"], secret.startswith(t["prefix"])) for t in tokens] == [("cluster-a", True)]
    assert secret not in page.inner_text("#tokens-table"), "the table shows a prefix only"

    with Receiver(Answer(200, body='{"received": true}')) as receiver:
        page.fill("#webhook-name", "ml-alerts")
        page.fill("#webhook-url", receiver.url)
        page.click("#webhook-form button[type=submit]")
        wait_until(page, "!document.getElementById('webhook-secret').hidden", LIVE_TIMEOUT_MS)
        receiver.secret = page.inner_text("#webhook-secret-value")
        page.click("#webhooks-rows .test-webhook")
        wait_until(
            page,
            "document.getElementById('webhook-output-title').textContent.startsWith('ok')",
            LIVE_TIMEOUT_MS,
        )
        assert "HTTP 200" in page.inner_text("#webhook-output-title")
        assert '{"received": true}' in page.inner_text("#webhook-output-body")
        [arrival] = receiver.arrivals
        assert arrival.signature_error is None, "signed with the secret the page showed"
        assert arrival.json()["type"] == "test"
        # the test send is in the delivery log like any delivery
        page.click("#webhooks-rows .show-deliveries")
        wait_until(
            page,
            "document.getElementById('webhook-output-title').textContent"
            ".startsWith('Delivery log')",
            LIVE_TIMEOUT_MS,
        )
        row = page.inner_text("#webhook-output-body tbody tr")
        assert row.split("\t")[0] == "test" and "delivered" in row

    page.click("#tokens-rows .revoke-token")
    wait_until(page, "document.querySelector('#tokens-rows tr.disabled') !== null", 5_000)
    tokens = httpx.get(f"{live_server.url}/api/v1/projects/demo/tokens", timeout=10).json()
    assert tokens[0]["revoked_at"] is not None
    assert tab.problems == [], f"browser errors: {tab.problems}"


@pytest.mark.skipif(not UPDATE_SCREENSHOTS, reason="writes docs/screenshots/: UPDATE_SCREENSHOTS=1")
def test_screenshots_of_the_demo(live_server: LiveServer, browser: Any) -> None:
    """The README's screenshots, from the demo trained through the real SDK: the dead-units
    scenario (project demo) and the complete-collapse one (project ssl), with a webhook that
    receives the alerts and an ingest token."""
    from collapsewatch_demo.scenarios import run_scenario

    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with Receiver() as receiver:
        hook = {"name": "#ml-alerts", "url": receiver.url, "format": "slack"}
        r = httpx.post(f"{live_server.url}/api/v1/projects/demo/webhooks", json=hook, timeout=10)
        assert r.status_code == 201, r.text
        runs = run_scenario("dead_units", live_server.url, project="demo", log=lambda _: None)
        run_scenario("complete_collapse", live_server.url, project="ssl", log=lambda _: None)
        collapsed, control = (str(r.run_id) for r in runs)
        httpx.post(f"{live_server.url}/api/v1/projects/demo/tokens", json={"name": "gpu-cluster"})
        deadline = time.monotonic() + 10
        while not receiver.arrivals and time.monotonic() < deadline:
            time.sleep(0.1)

        for scheme in ("light", "dark"):
            # the README opens with the light one: header, health and the first chart, short
            # enough to leave the quick start in view
            height = 1000 if scheme == "light" else 1500
            context = browser.new_context(
                viewport={"width": 1360, "height": height}, color_scheme=scheme
            )
            page = context.new_page()
            page.goto(f"{live_server.url}/runs/{collapsed}")
            wait_until(page, chart_ready("chart-dead_fraction"), 15_000)
            page.wait_for_timeout(500)
            name = "run.png" if scheme == "light" else "run-dark.png"
            page.screenshot(path=str(DOCS_SCREENSHOTS / name))
            context.close()

        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto(f"{live_server.url}/")
        page.screenshot(path=str(DOCS_SCREENSHOTS / "runs.png"))
        page.goto(
            f"{live_server.url}/compare?runs={collapsed},{control}"
            "&indicator=dead_fraction&probe=fc2"
        )
        wait_until(page, "!!document.getElementById('compare-chart').data", 10_000)
        page.wait_for_timeout(300)
        page.screenshot(path=str(DOCS_SCREENSHOTS / "compare.png"))
        page.goto(f"{live_server.url}/alerts?project=demo")
        page.fill("#rule-name", "fc2 losing units")
        page.select_option("#rule-indicator", "dead_fraction")
        page.fill("#rule-threshold", "0.3")
        page.fill("#rule-pending_points", "2")
        page.select_option("#backtest-run", collapsed)
        page.click("#backtest-button")
        wait_until(page, "!!document.getElementById('backtest-chart').data", 10_000)
        page.mouse.move(0, 0)  # no hover box, no mode bar
        page.wait_for_timeout(300)
        page.locator("#rule-form").screenshot(path=str(DOCS_SCREENSHOTS / "rule-editor.png"))
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(DOCS_SCREENSHOTS / "alerts.png"))
        page.goto(f"{live_server.url}/projects/demo/settings")
        page.click("#webhooks-rows .test-webhook")
        wait_until(
            page,
            "document.getElementById('webhook-output-title').textContent.startsWith('ok')",
            10_000,
        )
        page.screenshot(path=str(DOCS_SCREENSHOTS / "settings.png"), full_page=True)
        context.close()
