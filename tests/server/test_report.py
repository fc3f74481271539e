"""The run report: one self-contained HTML file, served and saved by the CLI."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from collapsewatch_server.cli import build_parser
from collapsewatch_server.cli_report import cmd_report
from collapsewatch_web.assets import plotly_js_path
from tests.helpers import add_half_dead_rule, make_batch
from tests.server.test_read_api import ingest


def doomed_run(client: Any) -> str:
    """A run with a firing alert (fc2 half dead against a rule at 0.3)."""
    batch = make_batch(name="report-run", steps=range(4))
    ingest(client, batch)
    add_half_dead_rule(client)
    ingest(client, make_batch(batch["run"]["run_id"], name="report-run", steps=range(4, 8)))
    return str(batch["run"]["run_id"])


def test_the_report_is_one_file_with_everything_inside(client: Any) -> None:
    run_id = doomed_run(client)
    r = client.get(f"/runs/{run_id}/report.html")
    assert r.status_code == 200, r.text
    assert 'filename="proj-report-run-report.html"' in r.headers["content-disposition"]
    html = r.text
    # nothing is fetched: no external script, stylesheet, image or frame
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(?!data:|#)", html)
    bundle = plotly_js_path().read_text(encoding="utf-8")
    assert bundle[:300] in html and bundle[-300:] in html  # the plotly.js bundle itself
    assert "report-run" in html and run_id in html
    series = client.get(f"/api/v1/runs/{run_id}/series").json()
    for indicator in {s["indicator"] for s in series}:
        assert f'id="chart-{indicator}"' in html, indicator
    assert "half dead" in html and "fc2" in html  # the alert event
    assert client.get(f"/runs/{uuid.uuid4()}/report.html").status_code == 404


def test_the_cli_saves_the_report(client: Any, tmp_path: Path, capsys: Any) -> None:
    run_id = doomed_run(client)
    out = tmp_path / "run.html"
    args = build_parser().parse_args(["report", run_id, "-o", str(out)])
    assert cmd_report(args, client) == 0
    saved, served = out.read_text(encoding="utf-8"), client.get(f"/runs/{run_id}/report.html").text

    def undated(html: str) -> str:  # the two were generated at different moments
        return re.sub(r"generated [^<]*", "", html)

    assert undated(saved) == undated(served)
    assert str(out) in capsys.readouterr().out
    missing = build_parser().parse_args(["report", str(uuid.uuid4()), "-o", str(tmp_path / "x")])
    assert cmd_report(missing, client) == 1
    assert "run not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
