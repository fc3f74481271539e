"""The dashboards in a real browser: Debian's chromium, driven by Playwright, against the real
``collapsewatch serve`` process. Charts must render from the embedded figures, grow live from
the SSE stream without a reload, and the runs table must pick up new runs by itself.

With UPDATE_SCREENSHOTS=1, test_screenshots_of_the_demo trains the demo through the SDK and
writes the screenshots of docs/screenshots/.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LiveServer
from tests.webhook_support import Answer, Receiver

CHROMIUM = Path("/usr/bin/chromium")
#: Screenshots are taken only when asked (UPDATE_SCREENSHOTS=1), so a test run leaves the
#: work tree clean.
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"


LIVE_TIMEOUT_MS = 5_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason=f"no chromium at {CHROMIUM} (apt-get install chromium); required when CI is set",
    ),
]

PROBES = ("fc1", "fc2", "fc3", "out")
WIDTH = 64


def layer_stats(dead: int, spread: float, rank_decay: float, n: int = 256) -> dict[str, Any]:
    """Activation statistics of a ``WIDTH``-unit layer: ``dead`` units never positive, mean unit
    vector of norm ``1 - spread`` and a spectrum decaying by ``rank_decay`` per eigenvalue."""
    unit = (1.0 - spread) * n / math.sqrt(WIDTH)
    return {
        "n": float(n),
        "width": float(WIDTH),
        "sum": [1.0] * WIDTH,
        "sumsq": [2.0 * n] * WIDTH,  # unit variance 2: no VICReg variance hinge
        "pos": [0.0] * dead + [n / 2] * (WIDTH - dead),
        "unit_sum": [unit] * WIDTH,
        "eig": [rank_decay**i for i in range(WIDTH)],
        "cov_n": float(n),
    }


def dead_units(probe: str, step: int) -> int:
    """fc2 loses most of its units in the first steps (the demo's recipe), the rest stay alive."""
    if probe == "fc2":
        return min(46, 8 * step) if step < 6 else 46 + min(3, step // 40)
    return {"fc3": 2}.get(probe, 0)


def batch(
    run_id: str,
    steps: range,
    *,
    name: str = "relu-lr0.1",
    project: str = "demo",
    probes: tuple[str, ...] = PROBES,
    status: str | None = None,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    for step in steps:
        for probe in probes:
            stats = layer_stats(
                dead_units(probe, step), 0.9 - 0.002 * step, 0.8 + 0.05 * (probe == "fc2")
            )
            records.append({"probe": probe, "kind": "activation", "step": step, "stats": stats})
        loss = 1.2 * math.exp(-step / 80) + 0.15
        records.append(
            {
                "probe": "loss",
                "kind": "loss",
                "step": step,
                "stats": {"mean": loss, "max": loss * 1.3, "count": 10.0},
            }
        )
    return {
        "batch_id": str(uuid.uuid4()),
        "run": {
            "run_id": run_id,
            "project": project,
            "name": name,
            "host": "gpu-node-07",
            "torch_version": "2.5.1",
            "sdk_version": "0.1.0",
            "config": {"lr": 0.1, "batch_size": 64, "optimizer": "SGD"},
            "started_at": (started_at or datetime.now(UTC)).isoformat(),
            "probes": [
                {"name": p, "kind": "activation", "module": "Linear", "order": i, "width": WIDTH}
                for i, p in enumerate(probes)
            ],
        },
        "records": records,
        "status": status,
    }


def ingest(server: LiveServer, body: dict[str, Any]) -> None:
    r = httpx.post(f"{server.url}/api/v1/ingest", json=body, timeout=30)
    assert r.status_code == 202, r.text


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@dataclass
class Tab:
    """A browser page and every console error or uncaught exception it has shown."""

    page: Any
    problems: list[str]


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, color_scheme="light")
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    yield Tab(page, problems)
    context.close()


def series_indicators(server: LiveServer, run_id: str) -> set[str]:
    series = httpx.get(f"{server.url}/api/v1/runs/{run_id}/series", timeout=10).json()
    return {s["indicator"] for s in series}


def wait_until(page: Any, expression: str, timeout_ms: int) -> None:
    """Poll a JS expression until it is true. Not ``page.wait_for_function``: that evaluates a
    string inside the page, which the dashboard's Content-Security-Policy rightly forbids."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_ms} ms: {expression}"
        page.wait_for_timeout(100)


def trace_names(page: Any, dom_id: str) -> list[str]:
    """Names of a chart's layer lines (not its alert markers)."""
    return page.evaluate(
        f"document.getElementById('{dom_id}').data.filter(t => t.uid !== 'alerts').map(t => t.name)"
    )


def chart_ready(dom_id: str) -> str:
    return f"document.getElementById('{dom_id}-card').dataset.state === 'ready'"


def test_run_page_renders_charts_and_grows_live(live_server: LiveServer, tab: Tab) -> None:
    page = tab.page
    run_id = str(uuid.uuid4())
    ingest(live_server, batch(run_id, range(0, 200, 4)))

    page.goto(f"{live_server.url}/runs/{run_id}")
    # the first family's chart loads as soon as the page shows it; the rest wait to be seen
    wait_until(page, chart_ready("chart-dead_fraction"), 15_000)
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
    from collapsewatch_server.scenarios import run_scenario

    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with Receiver() as receiver:
        hook = {"name": "#ml-alerts", "url": receiver.url, "format": "slack"}
        r = httpx.post(f"{live_server.url}/api/v1/projects/demo/webhooks", json=hook, timeout=10)
        assert r.status_code == 201, r.text
        runs = run_scenario("dead_units", live_server.url, project="demo", log=lambda _: None)
        run_scenario("complete_collapse", live_server.url, project="ssl", log=lambda _: None)
        collapsed, control = (str(r["run_id"]) for r in runs)
        httpx.post(f"{live_server.url}/api/v1/projects/demo/tokens", json={"name": "gpu-cluster"})
        deadline = time.monotonic() + 10
        while not receiver.arrivals and time.monotonic() < deadline:
            time.sleep(0.1)

        for scheme in ("light", "dark"):
            context = browser.new_context(
                viewport={"width": 1360, "height": 1500}, color_scheme=scheme
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
