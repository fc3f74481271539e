"""The Makefile's torch stamp: ``make run TORCH=...`` installs that build even in an existing
virtual environment, and says which build is in use. pip is replaced by a script that writes
down what it was asked (the Makefile is what is tested, not pip)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def make(venv: Path, torch: str) -> str:
    done = subprocess.run(
        ["make", "-C", str(ROOT), f"VENV={venv}", f"TORCH={torch}", f"{venv}/.demo-installed"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_another_torch_is_installed_into_an_existing_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    python.chmod(0o755)

    out = make(venv, "torch==2.13.0")
    assert "installing torch==2.13.0" in out
    assert "install --quiet --disable-pip-version-check torch==2.13.0" in log.read_text()
    assert "-e .[demo]" in log.read_text()

    log.unlink()
    out = make(venv, "torch==2.13.0")
    assert "torch build: torch==2.13.0" in out
    assert not log.exists(), "nothing changed: nothing installed"

    cpu = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    out = make(venv, cpu)
    assert f"installing {cpu}" in out
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in log.read_text()
    assert (venv / ".torch-spec").read_text().strip() == cpu
