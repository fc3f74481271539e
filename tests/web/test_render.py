"""Page rendering without a server: schemas and figure JSON in, HTML out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from collapsewatch.schemas import (
    IndicatorInfo,
    ProbeKind,
    ProbePublic,
    RunDetail,
    RunPublic,
    RunStatus,
    SeriesPoints,
)
from collapsewatch_web import figures, render

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
XSS = "<script>alert(1)</script>"


def indicator(name: str, family: str, **kw: Any) -> IndicatorInfo:
    return IndicatorInfo(
        name=name,
        title=kw.pop("title", name.replace("_", " ").title()),
        family=family,
        applies_to=ProbeKind.activation,
        direction=kw.pop("direction", "high_is_bad"),
        meaning=kw.pop("meaning", "what it means"),
        what_to_try="what to try",
        **kw,
    )


def chart(info: IndicatorInfo, lines: dict[str, list[float | None]]) -> tuple[IndicatorInfo, dict]:
    series = [
        SeriesPoints(
            indicator=info.name,
            probe=probe,
            steps=list(range(len(values))),
            values=values,
            total=len(values),
            downsampled=False,
        )
        for probe, values in lines.items()
    ]
    return info, figures.figure_json(figures.indicator_figure(info, series))


def run_detail(**kw: Any) -> RunDetail:
    base: dict[str, Any] = {
        "run_id": uuid.uuid4(),
        "project": "demo",
        "name": "relu-lr0.1",
        "status": RunStatus.running,
        "started_at": T0,
        "last_seen_at": T0,
        "last_step": 42,
        "host": "gpu-7",
        "torch_version": "2.5.1",
        "probes": [ProbePublic(name="fc1", kind=ProbeKind.activation, module="Linear", order=0)],
    }
    return RunDetail(**{**base, **kw})


def embedded(html: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="cw-run-data">(.*?)</script>', html, re.S
    )
    assert match, "the run page must embed its live data"
    return json.loads(match.group(1))


DEAD = indicator("dead_fraction", "dead_units", title="Dead units", warn=0.2, critical=0.5)
RANK = indicator("effective_rank", "dimensional", direction="low_is_bad")
LOSS = indicator("loss", "training", direction="info")


def test_run_page_has_a_chart_per_indicator_grouped_by_family_in_reading_order() -> None:
    charts = [chart(LOSS, {"loss": [1.0]}), chart(RANK, {"fc1": [3.0]}), chart(DEAD, {"fc1": [0]})]
    html = render.render_run_page(run_detail(), charts, cursor=7)
    for name in ("dead_fraction", "effective_rank", "loss"):
        assert f'id="chart-{name}"' in html
    headings = re.findall(r'<h2 id="family-([a-z_]+)"', html)
    assert headings == ["dead_units", "dimensional", "training"]
    data = embedded(html)
    assert data["cursor"] == 7
    assert [c["indicator"] for c in data["charts"]] == ["loss", "effective_rank", "dead_fraction"]
    assert data["charts"][2]["critical"] == 0.5


def test_latest_values_flag_the_layer_past_its_threshold() -> None:
    charts = [chart(DEAD, {"fc1": [0.0, 0.01], "fc2": [0.1, 0.73], "fc3": [0.0, 0.25]})]
    html = render.render_run_page(run_detail(), charts, cursor=0)
    items = dict(re.findall(r'<li data-probe="([^"]+)" class="severity-(\w+)">', html))
    assert items == {"fc1": "ok", "fc2": "critical", "fc3": "warn"}
    attention = html.split('id="attention-list"')[1].split("</ul>")[0]
    assert attention.index("fc2") < attention.index("fc3"), "critical before warn"
    assert "0.73" in attention
    assert 'class="card severity-critical"' in html


def test_a_nan_last_point_shows_nan_not_an_older_value() -> None:
    html = render.render_run_page(run_detail(), [chart(DEAD, {"fc1": [0.9, None]})], cursor=0)
    item = html.split('data-probe="fc1"')[1].split("</li>")[0]
    assert "NaN" in item
    assert "0.9" not in item


def test_no_series_says_so() -> None:
    html = render.render_run_page(run_detail(), [], cursor=0)
    assert "No indicator points yet" in html
    assert embedded(html)["charts"] == []


def test_user_text_is_escaped_everywhere() -> None:
    run = run_detail(host=XSS, config={"note": XSS})
    html = render.render_run_page(run, [chart(DEAD, {XSS: [0.9]})], cursor=0)
    assert XSS not in html
    # the JSON block cannot be closed early by a probe name
    assert "</script><script>" not in html
    assert embedded(html)["charts"][0]["figure"]["data"][0]["name"] == XSS
    runs = [
        RunPublic(
            run_id=uuid.uuid4(),
            project="p",
            name="n",
            status=RunStatus.running,
            started_at=T0,
            last_seen_at=T0,
        )
    ]
    assert XSS not in render.render_runs_page(runs, project=XSS)
    assert XSS not in render.render_login_page(XSS)
    assert XSS not in render.render_error_page(404, XSS)


def test_runs_page_rows_in_the_given_order_with_links_and_badges() -> None:
    runs = [
        RunPublic(
            run_id=uuid.uuid4(),
            project=project,
            name=name,
            status=status,
            started_at=T0,
            last_seen_at=T0,
            last_step=step,
        )
        for project, name, status, step in [
            ("demo", "newer", RunStatus.running, 10),
            ("ssl", "older", RunStatus.crashed, None),
        ]
    ]
    html = render.render_runs_page(runs)
    assert re.findall(r'class="run-name" href="/runs/[^"]+">([^<]+)<', html) == ["newer", "older"]
    assert f'href="/runs/{runs[0].run_id}"' in html
    assert 'class="badge status-crashed"' in html
    assert "2026-03-01 09:30 UTC" in html
    assert 'id="runs-empty" hidden' in html


def test_runs_page_without_runs_explains_how_to_start() -> None:
    html = render.render_runs_page([])
    assert "collapsewatch.watch(" in html
    assert '<table class="runs" id="runs-table" data-project="" hidden>' in html


def test_pages_reference_local_assets_only() -> None:
    html = render.render_run_page(run_detail(), [chart(DEAD, {"fc1": [0.0]})], cursor=0)
    sources = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert any(s.startswith("/static/plotly.min.js?v=") for s in sources)
    assert all(not s.startswith(("http:", "https:", "//")) for s in sources), sources


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "NaN"),
        (float("inf"), "NaN"),
        (0.0, "0"),
        (0.7333, "0.733"),
        (256.0, "256"),
        (1234.5, "1230"),
        (12345.0, "1.23e+04"),
        (0.0001234, "1.23e-04"),
    ],
)
def test_format_value(value: float | None, text: str) -> None:
    assert render.format_value(value) == text


def test_format_time_treats_naive_as_utc() -> None:
    assert render.format_time(datetime(2026, 3, 1, 9, 30)) == "2026-03-01 09:30 UTC"
    assert render.format_time(None) == ""


def test_web_package_never_imports_the_server_or_the_database() -> None:
    code = (
        "import sys, collapsewatch_web.render, collapsewatch_web.figures, collapsewatch_web.assets;"
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('collapsewatch_server', 'sqlalchemy', 'fastapi', 'starlette')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"collapsewatch_web pulled in: {out.stdout}"
