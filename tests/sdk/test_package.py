"""The package surface: light to import, and a public API of a few names."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import collapsewatch

HEAVY = ("fastapi", "sqlalchemy", "uvicorn", "plotly", "starlette", "torch", "pandas", "pyarrow")


def test_import_is_light() -> None:
    """`import collapsewatch` in a fresh interpreter pulls in no server dependency, nor torch."""
    code = f"import sys, collapsewatch; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    package_parent = str(Path(collapsewatch.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_parent, *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"import collapsewatch imported: {result.stdout}"


def test_all_lists_exactly_the_public_names() -> None:
    exported = {
        name
        for name, value in vars(collapsewatch).items()
        if not isinstance(value, types.ModuleType)
        and (not name.startswith("_") or name == "__version__")
    }
    assert sorted(collapsewatch.__all__) == sorted(exported)
    assert set(collapsewatch.__all__) == {
        "watch",
        "Monitor",
        "finish",
        "__version__",
        "Api",
        "ApiError",
    }


def test_version_is_a_string() -> None:
    assert isinstance(collapsewatch.__version__, str) and collapsewatch.__version__
