"""SDK -> the real app in-process (Starlette's TestClient as the SDK's HTTP client) -> SQLite."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import collapsewatch


def series(client: Any, run_id: str, indicator: str, probe: str) -> dict[int, float]:
    pts = client.get(f"/api/v1/runs/{run_id}/series/{indicator}", params={"probe": probe}).json()
    return dict(zip(pts["steps"], pts["values"], strict=True))


def test_sgd_update_ratio_matches_lr_times_grad_over_weight(inproc: Any) -> None:
    """For plain SGD, ||w' - w|| = lr ||g||: the server's update_ratio must equal
    lr * grad_norm / weight_norm at every step, which ties three statistics together."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    lr = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    crit = nn.MSELoss()
    monitor = collapsewatch.watch(
        model,
        optimizer=opt,
        criterion=crit,
        project="inproc",
        run="sgd",
        server="http://testserver",
        http_client=inproc,
        every=1,
    )
    x, y = torch.randn(128, 8), torch.randn(128, 1)
    for _ in range(12):
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    monitor.finish()

    run = inproc.get(f"/api/v1/runs/{monitor.run_id}").json()
    assert (run["status"], run["last_step"]) == ("finished", 11)
    probes = {p["name"]: p for p in run["probes"]}
    assert probes["0"]["kind"] == "activation" and probes["0"]["width"] == 32
    assert probes["0.weight"]["kind"] == "parameter" and probes["0.weight"]["params"] == 8 * 32

    ratio = series(inproc, str(monitor.run_id), "update_ratio", "0.weight")
    grad = series(inproc, str(monitor.run_id), "grad_norm", "0.weight")
    weight = series(inproc, str(monitor.run_id), "weight_norm", "0.weight")
    assert sorted(ratio) == list(range(12))
    for step in ratio:
        assert math.isclose(ratio[step], lr * grad[step] / weight[step], rel_tol=1e-4)

    loss = series(inproc, str(monitor.run_id), "loss", "loss")
    assert loss[11] < loss[0]  # the loss the criterion saw, not a made-up number


def test_the_run_page_of_an_sdk_run_renders(inproc: Any) -> None:
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    monitor = collapsewatch.watch(
        model,
        optimizer=opt,
        criterion=crit,
        project="inproc",
        run="page",
        server="http://testserver",
        http_client=inproc,
        every=2,
    )
    for _ in range(6):
        opt.zero_grad()
        crit(model(torch.randn(32, 4)), torch.randint(0, 2, (32,))).backward()
        opt.step()
    monitor.finish()
    page = inproc.get(f"/runs/{monitor.run_id}")
    assert page.status_code == 200
    assert "Dead units" in page.text and "page" in page.text
