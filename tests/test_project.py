"""Promises about the project itself: the README tells the truth, imports flow one way."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from collapsewatch_server.indicators import CATALOGUE
from collapsewatch_server.indicators.docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make run\b", readme, re.M)
    assert re.search(r"^make test\b", readme, re.M)
    assert re.search(r"^make test$", ci, re.M)


def test_docs_indicators_is_what_the_catalogue_generates() -> None:
    """docs/indicators.md is generated; after a catalogue change, regenerate it with
    ``python -m collapsewatch_server.indicators.docs > docs/indicators.md``."""
    committed = (ROOT / "docs" / "indicators.md").read_text()
    assert committed == render(), "docs/indicators.md is stale: regenerate it"
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", committed, re.M))
    assert documented == set(CATALOGUE)


def test_nothing_points_outside_the_repository() -> None:
    """Users have the repository, not the workspace it was written in: no code, docstring or
    page refers to files beside it."""
    outside = re.compile(r"\.\./shared|INDICATORS\.md")
    paths = [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md")]
    for top in ("client_sdk", "server", "web", "demo", "tests", "bench"):
        paths += (ROOT / top).rglob("*.py")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in paths
        if path.name != "CHANGELOG.md"
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if outside.search(line) and path.name != "test_project.py"
    ]
    assert found == []


def test_web_package_never_imports_the_server_or_the_database() -> None:
    code = (
        "import sys, collapsewatch_web, collapsewatch_web.figures\n"
        "bad = [m for m in ('collapsewatch_server', 'sqlalchemy') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


#: The server's layers, lowest first: a module imports from its own layer or a lower one.
SERVER_LAYERS = {
    **dict.fromkeys(
        (
            "config",
            "errors",
            "tables",
            "db",
            "codec",
            "downsample",
            "auth",
            "poll_loop",
            "throttle",
            "write_gate",
            "in_flight",
        ),
        0,
    ),
    **dict.fromkeys(("indicators", "alerts", "webhooks", "windows", "rollups", "migrations"), 1),
    "repositories": 2,
    # metrics: counters the services update, and gauges read through the repositories
    **dict.fromkeys(("services", "metrics"), 3),
    **dict.fromkeys(("api", "worker", "processor"), 4),
    **dict.fromkeys(
        (
            "app",
            "cli",
            "cli_http",
            "cli_rules",
            "cli_silences",
            "cli_webhooks",
            "cli_report",
            "__init__",
        ),
        5,
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
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for target in targets:
                if not target.startswith("collapsewatch_server."):
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
    # a Markdown image or an <img> tag (which sets the width GitHub shows)
    first = re.search(r"!\[[^\]]*\]\(([^)]+\.png)\)|<img src=\"([^\"]+\.png)\"", readme)
    assert first is not None
    assert readme.index(first.group(0)) < readme.index("## Quick start")
    width, height = png_size(ROOT / (first.group(1) or first.group(2)))
    assert height <= 1000 and height / width <= 0.75, (width, height)


def test_the_readme_says_how_to_install_until_collapsewatch_is_published() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "not published on PyPI yet" in readme
    assert "https://download.pytorch.org/whl/cpu" in readme
    assert "docs/sdk.md#installing-into-your-own-environment" in readme
    guide = (ROOT / "docs" / "sdk.md").read_text()
    assert "## Installing into your own environment" in guide
    assert "pip install ." in guide and "pip wheel" in guide
    assert "https://download.pytorch.org/whl/cpu" in guide
    for line in (readme + guide).splitlines():  # never a bare `pip install collapsewatch`
        assert not re.search(r"^\s*pip install collapsewatch\b", line), line
    assert "`pip install collapsewatch`" not in readme  # nor a promise of it


def test_server_never_imports_torch_or_the_demo_at_import_time() -> None:
    """The server's Docker image has neither torch nor ``collapsewatch_demo``: no server
    module imports them at its top level (``collapsewatch demo`` imports the scenarios inside
    the command)."""
    package = ROOT / "server" / "collapsewatch_server"
    heavy = []
    for path in package.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            heavy += [
                f"{path.relative_to(ROOT)} imports {n}"
                for n in names
                if n.split(".")[0] in ("torch", "collapsewatch_demo")
            ]
    assert heavy == []
