"""The processes a validation run starts do not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) is gone for our purpose
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_the_busy_neighbour_stops_when_its_parent_is_killed() -> None:
    """SIGKILL leaves no chance to stop the neighbour: it must notice on its own."""
    code = (
        "import os, sys, time\n"
        "from collapsewatch_demo.validation import processes\n"
        "proc = processes.subprocess.Popen(\n"
        "    [sys.executable, '-c', processes.BUSY_LOOP, str(os.getpid())])\n"
        "print(proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(1.0)
    assert _alive(child), "the neighbour should run while its parent lives"
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    parent.stdout.close()
    deadline = time.monotonic() + 60  # it imports torch before its first check
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the busy neighbour outlived its killed parent"
