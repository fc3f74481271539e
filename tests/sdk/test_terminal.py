"""What a training script prints when the server is away: one line, once, on stderr (no
second copy from ``warnings``), then the account at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import free_port

SCRIPT = """
import torch
from torch import nn
import collapsewatch

model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
crit = nn.CrossEntropyLoss()
monitor = collapsewatch.watch(model, opt, crit, every=2, server={server!r})
x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
for _ in range(12):
    opt.zero_grad()
    crit(model(x), y).backward()
    opt.step()
monitor.finish()
"""


def test_the_server_away_warning_is_printed_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAPSEWATCH_")}
    env["COLLAPSEWATCH_SPOOL_DIR"] = str(tmp_path / "spool")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(server=f"http://127.0.0.1:{free_port()}")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    away = [line for line in done.stderr.splitlines() if "unreachable" in line]
    assert len(away) == 1, done.stderr
    assert "collapsewatch sync" in away[0]
    assert "Warning" not in done.stderr, done.stderr  # no warnings.warn copy
