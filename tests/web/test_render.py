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

from collapsewatch.schemas import ProbeKind, RunStatus
from collapsewatch_web import render, views
from collapsewatch_web.api_schemas.alerts import AlertEventPublic, EventStatus, Severity
from collapsewatch_web.api_schemas.catalogue import IndicatorInfo
from collapsewatch_web.api_schemas.charts import LatestValue
from collapsewatch_web.api_schemas.health import FamilyHealth, RunHealth, RunOverview
from collapsewatch_web.api_schemas.runs import PointEvent, ProbePublic, RunDetail

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


def judged(info: IndicatorInfo, lines: dict[str, float | None]) -> list[LatestValue]:
    """Each probe's newest value judged against the catalogue's levels, as the server does."""
    points = [PointEvent(indicator=info.name, probe=p, step=9, value=v) for p, v in lines.items()]
    return views.latest_values(points, {info.name: views.thresholds_for(info, [])})


def health(**kw: Any) -> RunHealth:
    base: dict[str, Any] = {"run_id": uuid.uuid4(), "families": [], "open_alerts": 0, "recent": []}
    return RunHealth(**{**base, **kw})


def page(
    infos: list[IndicatorInfo], latest: list[LatestValue], run: RunDetail | None = None, **kw: Any
) -> str:
    return render.render_run_page(
        run or run_detail(),
        indicators=infos,
        latest=latest,
        health=kw.pop("health", health()),
        cursor=kw.pop("cursor", 0),
        alerts_after=T0,
        **kw,
    )


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


def test_run_page_has_a_lazy_card_per_indicator_grouped_by_family_in_reading_order() -> None:
    latest = judged(DEAD, {"fc1": 0.0, "fc2": 0.1}) + judged(LOSS, {"loss": 1.0})
    html = page([LOSS, RANK, DEAD], latest + judged(RANK, {"fc1": 3.0}), cursor=7)
    headings = re.findall(r'<h2 id="family-([a-z_]+)"', html)
    assert headings == ["dead_units", "dimensional", "training"]
    for name in ("dead_fraction", "effective_rank", "loss"):
        assert f'data-indicator="{name}" data-state="idle"' in html, "charts load when seen"
        assert f'<div class="chart lines" id="chart-{name}"' in html
    assert 'id="chart-dead_fraction-heat"' in html
    assert 'id="chart-loss-heat"' not in html, "one probe: no heatmap"
    data = embedded(html)
    assert data["cursor"] == 7
    assert data["alerts_after"] == T0.isoformat()
    assert set(data["indicators"]) == {"loss", "effective_rank", "dead_fraction"}
    dead = data["indicators"]["dead_fraction"]
    assert dead["dom_id"] == "chart-dead_fraction"
    assert "thresholds" not in dead, "live points arrive judged: the browser does not judge"


def test_latest_values_flag_the_layer_past_its_threshold_worst_first() -> None:
    html = page([DEAD], judged(DEAD, {"fc1": 0.01, "fc2": 0.73, "fc3": 0.25}))
    items = re.findall(r'<li data-probe="([^"]+)" class="severity-(\w+)">', html)
    assert items == [("fc2", "critical"), ("fc3", "warn"), ("fc1", "ok")]
    worst = html.split('id="worst-rows"')[1].split("</tbody>")[0]
    assert worst.index("fc2") < worst.index("fc3"), "critical before warn"
    assert "fc1" not in worst
    assert "0.73" in worst
    assert 'class="card severity-critical' in html
    assert [v["probe"] for v in embedded(html)["worst"]] == ["fc2", "fc3"]


def test_a_nan_last_point_shows_nan_not_an_older_value() -> None:
    html = page([DEAD], judged(DEAD, {"fc1": None}))
    item = html.split('data-probe="fc1"')[1].split("</li>")[0]
    assert "NaN" in item
    assert "severity-critical" in html, "a diverged statistic is past every threshold"


def test_no_series_says_so() -> None:
    html = page([], [])
    assert "No indicator points yet" in html
    assert embedded(html)["indicators"] == {}


def test_health_by_family_and_the_latest_alerts() -> None:
    event = AlertEventPublic(
        id=uuid.uuid4(),
        project="demo",
        run_id=uuid.uuid4(),
        run_name="relu",
        status=EventStatus.firing,
        severity=Severity.critical,
        indicator="dead_fraction",
        probe="fc2",
        step=15,
        message="dead_fraction on fc2 is 0.77, above 0.5 for 3 points",
        created_at=T0,
        url="/",
    )
    families = [
        FamilyHealth(family="dead_units", title="Dead units", state="critical", firing=1),
        FamilyHealth(family="training", title="Training health", state="ok"),
    ]
    html = page([DEAD], [], health=health(families=families, recent=[event]))
    chips = re.findall(r'<li class="chip state-(\w+)" data-family="(\w+)">', html)
    assert chips == [("critical", "dead_units"), ("ok", "training")]
    assert "1 critical" in html
    assert event.message in html
    assert f'href="/runs/{event.run_id}?step=15&amp;indicator=dead_fraction"' in html


def test_step_and_focus_go_to_the_page_script() -> None:
    data = embedded(page([DEAD], [], step=120, focus="dead_fraction"))
    assert (data["step"], data["focus"]) == (120, "dead_fraction")


def test_model_summary_in_the_header() -> None:
    probes = [
        ProbePublic(
            name=f"blocks.{i}",
            kind=ProbeKind.activation,
            module="Linear",
            order=i,
            width=512,
            params=262_656,
        )
        for i in range(4)
    ]
    html = page([DEAD], [], run=run_detail(probes=probes))
    assert "4 probes · 1.05M params" in html
    assert "Linear \u00d7 4" in html
    assert '<td class="mono">blocks.3</td>' in html


def test_user_text_is_escaped_everywhere() -> None:
    run = run_detail(host=XSS, config={"note": XSS})
    html = page([DEAD], judged(DEAD, {XSS: 0.9}), run=run)
    assert XSS not in html
    # the JSON block cannot be closed early by a probe name
    assert "</script><script>" not in html
    assert embedded(html)["worst"][0]["probe"] == XSS
    runs = [
        RunOverview(
            run_id=uuid.uuid4(),
            project="p",
            name="n",
            status=RunStatus.running,
            started_at=T0,
            last_seen_at=T0,
            health=[FamilyHealth(family=XSS, title=XSS, state="critical", firing=1)],
        )
    ]
    html = render.render_runs_page(runs, projects=[XSS], project=XSS, q=XSS)
    assert XSS not in html
    assert XSS not in render.render_login_page(XSS)
    assert XSS not in render.render_error_page(404, XSS)


def test_runs_page_rows_in_the_given_order_with_links_badges_and_health() -> None:
    runs = [
        RunOverview(
            run_id=uuid.uuid4(),
            project=project,
            name=name,
            status=status,
            started_at=T0,
            last_seen_at=T0,
            last_step=step,
            open_alerts=len(health),
            health=health,
        )
        for project, name, status, step, health in [
            ("demo", "newer", RunStatus.running, 10, [DEAD_CRITICAL]),
            ("ssl", "older", RunStatus.crashed, None, []),
        ]
    ]
    html = render.render_runs_page(runs, projects=["demo", "ssl"], project="ssl")
    assert re.findall(r'class="run-name" href="/runs/[^"]+">([^<]+)<', html) == ["newer", "older"]
    assert f'href="/runs/{runs[0].run_id}"' in html
    assert 'class="badge status-crashed"' in html
    assert "2026-03-01 09:30 UTC" in html
    assert 'id="runs-empty" hidden' in html
    assert '<li class="chip state-critical" title="Dead units: critical, 1 firing">' in html
    assert "all clear" in html
    assert '<td class="num open-alerts has-alerts">1</td>' in html
    assert "<option selected>ssl</option>" in html


DEAD_CRITICAL = FamilyHealth(family="dead_units", title="Dead units", state="critical", firing=1)


def test_runs_page_without_runs_explains_how_to_start() -> None:
    html = render.render_runs_page([])
    assert "collapsewatch.watch(" in html
    assert 'id="runs-table" data-project="" data-q="" data-tag="" hidden>' in html
    assert "No run matches" in render.render_runs_page([], q="nothing")


def test_pages_reference_local_assets_only() -> None:
    html = page([DEAD], judged(DEAD, {"fc1": 0.0}))
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
        "import sys, collapsewatch_web.render, collapsewatch_web.figures, collapsewatch_web.assets,"
        " collapsewatch_web.heatmaps, collapsewatch_web.views;"
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('collapsewatch_server', 'sqlalchemy', 'fastapi', 'starlette')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"collapsewatch_web pulled in: {out.stdout}"
