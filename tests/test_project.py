"""Promises about the project itself: the README tells the truth, imports flow one way."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from collapsewatch_server.indicators import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make run\b", readme, re.M)
    assert re.search(r"^make test\b", readme, re.M)
    assert re.search(r"^make test$", ci, re.M)


def test_readme_indicator_table_lists_the_catalogue() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", readme, re.M))
    assert set(CATALOGUE) <= documented, set(CATALOGUE) - documented


def test_web_package_never_imports_the_server_or_the_database() -> None:
    code = (
        "import sys, collapsewatch_web, collapsewatch_web.figures\n"
        "bad = [m for m in ('collapsewatch_server', 'sqlalchemy') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
