"""Promises about the project itself: the README tells the truth, imports flow one way."""

from __future__ import annotations

import ast
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


#: The server's layers, lowest first: a module imports from its own layer or a lower one.
#: (The torch scenarios are leaving the server: not placed.)
SERVER_LAYERS = {
    **dict.fromkeys(("config", "errors", "tables", "db", "codec", "downsample", "auth"), 0),
    **dict.fromkeys(("indicators", "alerts", "webhooks", "windows", "rollups", "migrations"), 1),
    "repositories": 2,
    # metrics: counters the services update, and gauges read through the repositories
    **dict.fromkeys(("services", "metrics"), 3),
    **dict.fromkeys(("api", "worker", "processor"), 4),
    **dict.fromkeys(
        ("app", "cli", "cli_http", "cli_rules", "cli_webhooks", "cli_report", "__init__"), 5
    ),
}


def _layer(module: str) -> int:
    name = module.split(".")[1] if "." in module else "__init__"
    assert name in SERVER_LAYERS, f"place collapsewatch_server.{name} in SERVER_LAYERS"
    return SERVER_LAYERS[name]


def test_server_modules_import_only_downwards() -> None:
    """Routes and the worker call services, services call repositories and the pure modules,
    repositories only talk SQL: no module imports from a layer above its own."""
    package = ROOT / "server" / "collapsewatch_server"
    upward = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package.parent).with_suffix("")
        source = ".".join(relative.parts).removesuffix(".__init__")
        if ".scenarios" in source:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for target in targets:
                if not target.startswith("collapsewatch_server.") or ".scenarios" in target:
                    continue
                if _layer(target) > _layer(source):
                    upward.append(f"{source} imports {target}")
    assert upward == []


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_the_readme_opens_with_a_screenshot_that_leaves_the_quick_start_in_view() -> None:
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme)
    assert first is not None
    assert readme.index(first.group(0)) < readme.index("## Quick start")
    width, height = png_size(ROOT / first.group(1))
    assert height <= 1000 and height / width <= 0.75, (width, height)


def test_the_readme_says_how_to_install_until_collapsewatch_is_published() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "not published on PyPI yet" in readme
    assert "pip install ." in readme and "pip wheel" in readme
    assert "https://download.pytorch.org/whl/cpu" in readme
    for line in readme.splitlines():  # never a bare promise of `pip install collapsewatch`
        assert not re.search(r"^\s*pip install collapsewatch\b", line), line
