"""The first hour at the terminal: ``--version``, a busy port, Ctrl-C of the demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from collapsewatch._version import __version__
from collapsewatch_server.cli import main
from tests.helpers import free_port


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "collapsewatch_server.cli", *argv]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("COLLAPSEWATCH_")}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"collapsewatch {__version__}"


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_busy_port_says_to_pick_another(command: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            cli(command, "--port", str(port), "--db", f"sqlite:///{tmp_path}/cw.db"),
            capture_output=True,
            text=True,
            timeout=120,
            env=clean_env(),
        )
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr
    assert f"--port {port + 1}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_ctrl_c_of_the_demo_stops_without_a_traceback(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        cli("demo", "--port", str(port), "--db", f"sqlite:///{tmp_path}/cw.db"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "dashboard at" in line, line
        time.sleep(3)  # training streams into the server now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # reaped, its pipes closed (not left to the next test)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "cannot schedule" not in err, err
    if "still stopping" in err:  # ended by its watchdog: say what held it up, in the summary
        warnings.warn(f"the demo's Ctrl-C needed its watchdog:\n{err[-4000:]}", stacklevel=1)
    assert "collapsewatch: stopped" in err
