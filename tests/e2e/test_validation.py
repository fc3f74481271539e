"""The validation suite's quick subset, as `make validate` runs the whole of it: the CLI
starts a real server, trains each pair through the SDK and prints its table. Held to the
recipes' truth (each collapse crosses its brute-force threshold, each control does not) and
to the report's shape, not to today's detection figures (issue 10 reports those)."""

from __future__ import annotations

import subprocess
import sys

from collapsewatch_demo.validation import pairs  # noqa: F401 - registers the pairs
from collapsewatch_demo.validation.registry import select


def test_quick_subset_trains_judges_and_reports() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "collapsewatch_demo.validation", "--fast", "--report-only"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "INVALID" not in text, text  # every recipe did what it claims on this machine
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line[:1].isalpha()}
    for pair in select(fast=True):
        row = rows[pair.name]
        assert row[1] == pair.half and row[2] == str(pair.steps), row
        assert row[3] in ("yes", "NO") and row[5] != "-", row  # the truth crossed at a step
        collapse_points = row[-2].split("/")[0]
        assert int(collapse_points.split("-")[0]) >= 1, row  # a series on every layer
    assert "heldout:" in text or "tune:" in text
