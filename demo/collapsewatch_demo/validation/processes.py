"""The processes a validation run starts beside itself: a real ``collapsewatch serve`` on a
temporary SQLite file, and a CPU-bound neighbour for ``--busy``. Both are context managers that
stop exactly the process they started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

#: What a second busy process on the machine does: matrix products on one torch thread, the
#: kind of neighbour (another training job) a shared 2-core machine has.
#: It stops when its parent (the pid after ``-c``) is gone: killed before it could stop it.
BUSY_LOOP = """
import os, sys
import torch
torch.set_num_threads(1)
parent = int(sys.argv[1])
a = torch.randn(384, 384)
while os.getppid() == parent:
    for _ in range(50):
        a = torch.tanh(a @ a)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc`` (one we started), killing it if it does not exit in 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def serve(
    db_url: str,
    *,
    port: int | None = None,
    out: IO[bytes] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``collapsewatch serve`` on ``db_url`` (a free port by default), in a clean
    environment plus ``env``, writing its output to ``out``; return the process and its URL
    once ``/healthz`` answers. The process is stopped if it does not answer in time."""
    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collapsewatch_server.cli",
            "serve",
            "--port",
            str(port),
            "--db",
            db_url,
            "--log-level",
            "warning",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("COLLAPSEWATCH_")}
        | (env or {}),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"the server on {url} did not answer within {timeout:.0f} s")


@contextmanager
def local_server() -> Iterator[str]:
    """A server on a SQLite file in a temporary directory, for the block; its log is printed
    if it fails to start."""
    with tempfile.TemporaryDirectory(prefix="collapsewatch-validation-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            try:
                proc, url = serve(f"sqlite:///{tmp}/validation.db", out=log)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}: {log_path.read_text()}") from exc
            try:
                yield url
            finally:
                stop(proc)


@contextmanager
def busy_neighbour(enabled: bool = True) -> Iterator[None]:
    """Run :data:`BUSY_LOOP` in a second process while the block runs (nothing if disabled)."""
    if not enabled:
        yield
        return
    proc = subprocess.Popen(
        [sys.executable, "-c", BUSY_LOOP, str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        stop(proc)
