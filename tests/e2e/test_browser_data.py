"""Taking data away and cleaning up, in a real browser against the real server: a chart's
CSV download holds every point of its indicator."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.e2e import browser
from tests.e2e.browser import PROBES, Tab, batch, chart_ready, ingest, series_indicators, wait_until
from tests.e2e.conftest import LiveServer

pytestmark = browser.pytestmark


def wait_processed(server: LiveServer, run_id: str, indicator: str) -> None:
    deadline = time.monotonic() + 30
    while indicator not in series_indicators(server, run_id):
        assert time.monotonic() < deadline, f"{indicator} never arrived"
        time.sleep(0.1)


def test_each_chart_downloads_its_points_as_csv(live_server: LiveServer, tab: Tab) -> None:
    page = tab.page
    run_id = str(uuid.uuid4())
    ingest(live_server, batch(run_id, range(0, 40, 2)))
    wait_processed(live_server, run_id, "dead_fraction")
    page.goto(f"{live_server.url}/runs/{run_id}")
    wait_until(page, chart_ready("chart-dead_fraction"), 15_000)
    with page.expect_download() as info:
        page.click("#chart-dead_fraction-card a.csv-download")
    download = info.value
    assert download.suggested_filename == f"{run_id}-dead_fraction.csv"
    with open(download.path(), encoding="utf-8") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    assert {r["indicator"] for r in rows} == {"dead_fraction"}
    assert [r["probe"] for r in rows[::20]] == list(PROBES)
    assert len(rows) == 20 * len(PROBES)
    fc2 = {int(r["step"]): float(r["value"]) for r in rows if r["probe"] == "fc2"}
    assert fc2[0] == 0.0 and fc2[38] == 46 / 64
    assert tab.problems == [], f"browser errors: {tab.problems}"


def test_deleting_a_run_from_its_page_asks_first(live_server: LiveServer, tab: Tab) -> None:
    page = tab.page
    run_id = str(uuid.uuid4())
    ingest(live_server, batch(run_id, range(0, 10, 2), name="to-delete"))
    wait_processed(live_server, run_id, "dead_fraction")
    page.goto(f"{live_server.url}/runs/{run_id}")
    questions: list[str] = []

    def answer(dialog: Any, accept: bool) -> None:
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))
    page.click("#delete-run")
    page.wait_for_timeout(300)
    assert "to-delete" in questions[0] and "cannot be undone" in questions[0]
    assert httpx.get(f"{live_server.url}/api/v1/runs/{run_id}").status_code == 200

    page.once("dialog", lambda d: answer(d, True))
    with page.expect_navigation():
        page.click("#delete-run")
    assert page.url.endswith("/?project=demo")
    assert "to-delete" not in page.inner_text("main")
    assert httpx.get(f"{live_server.url}/api/v1/runs/{run_id}").status_code == 404
    page.goto(f"{live_server.url}/runs/{run_id}")
    assert "not found" in page.inner_text("main")
    assert tab.problems == [] or all("404" in p for p in tab.problems), tab.problems


def test_the_report_opens_offline_with_its_charts_drawn(
    live_server: LiveServer, browser: Any, tmp_path: Path
) -> None:
    run_id = str(uuid.uuid4())
    ingest(live_server, batch(run_id, range(0, 60, 2), name="reported"))
    wait_processed(live_server, run_id, "dead_fraction")
    out = tmp_path / "run.html"
    saved = subprocess.run(
        [sys.executable, "-m", "collapsewatch_server.cli", "report", run_id, "-o", str(out)],
        env={**os.environ, "COLLAPSEWATCH_SERVER": live_server.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert saved.returncode == 0, saved.stderr
    live_server.stop()  # nothing left to fetch from

    context = browser.new_context(offline=True, viewport={"width": 1360, "height": 900})
    requests: list[str] = []

    def refuse(route: Any) -> None:
        requests.append(route.request.url)
        route.abort()

    context.route(re.compile(r"^(?!file:).*"), refuse)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(out.as_uri())
    charts = page.locator(".report-chart")
    count = charts.count()
    assert count >= 10  # lines and heatmaps of every family of the run
    wait_until(
        page,
        "[...document.querySelectorAll('.report-chart')].every(n => n.dataset.drawn === 'true')",
        30_000,
    )
    dead = page.evaluate("document.getElementById('chart-dead_fraction').data.map(t => t.name)")
    assert set(PROBES) <= set(dead)
    assert page.locator("#chart-dead_fraction .main-svg .scatterlayer .trace").count() >= 4
    assert page.locator("#chart-dead_fraction-heat .main-svg").count() >= 1
    assert "reported" in page.inner_text("h1")
    assert requests == [] and problems == [], (requests, problems)
    context.close()


def test_tags_edited_on_the_run_page_filter_the_runs_list(
    live_server: LiveServer, tab: Tab
) -> None:
    page = tab.page
    tagged, other = str(uuid.uuid4()), str(uuid.uuid4())
    ingest(live_server, batch(tagged, range(0, 6, 2), name="to-tag"))
    ingest(live_server, batch(other, range(0, 6, 2), name="untagged"))
    wait_processed(live_server, tagged, "dead_fraction")
    page.goto(f"{live_server.url}/runs/{tagged}")
    page.fill("#run-tags-input", "baseline, lr-sweep ,baseline")
    page.click("#run-tags button[type=submit]")
    wait_until(page, "document.getElementById('run-tags-status').textContent === 'saved'", 5_000)
    assert page.locator("#run-tag-list a.tag").all_inner_texts() == ["baseline", "lr-sweep"]
    assert httpx.get(f"{live_server.url}/api/v1/runs/{tagged}").json()["tags"] == [
        "baseline",
        "lr-sweep",
    ]

    page.click("#run-tag-list a:has-text('lr-sweep')")  # a tag links to the filtered list
    page.wait_for_load_state()
    assert page.url.endswith("/?tag=lr-sweep")
    names = page.locator("#runs-table a.run-name").all_inner_texts()
    assert names == ["to-tag"]
    page.goto(f"{live_server.url}/")
    page.fill("#tag-filter", "baseline")
    page.click("#runs-filter button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#runs-table a.run-name").all_inner_texts() == ["to-tag"]
    assert page.locator("#runs-table .tags a.tag").all_inner_texts() == ["baseline", "lr-sweep"]
    page.wait_for_timeout(5_500)  # runs.js refreshes from /api/v1/overview?tag=...: still one
    assert page.locator("#runs-table a.run-name").all_inner_texts() == ["to-tag"]
    assert tab.problems == [], tab.problems
