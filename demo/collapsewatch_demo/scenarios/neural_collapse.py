"""Scenario ``neural_collapse`` (family 1): a classifier trained into its terminal phase, and a
control stopped early.

Recipe (INDICATORS.md, family 1): 5 overlapping Gaussian classes in 10-D, N = 500 (100 a class;
class centres drawn once from N(0, 1.25^2), noise std 2; made here, nothing is downloaded); MLP
10-512-512-64 with BatchNorm and ReLU after each hidden layer and a bias-free linear head (probe
``head``, whose input is the 64-D penultimate feature); SGD lr 0.05, momentum 0.9, weight decay
5e-3, cosine schedule over 200 epochs of batches of 50 (2000 steps), cross-entropy.

- Collapse: all 200 epochs. Past 100% training accuracy the features of each class shrink onto
  their class mean: NC1 of the whole training set 1.18-1.24 after the first epoch, 0.0095-0.0124
  at the end (seeds 0-2; INDICATORS.md: 1.1 -> 0.009).
- Control: the same run stopped after 3 epochs (30 steps): NC1 0.85-0.89.

The SDK computes NC1 per sampled batch of 50 (10 rows a class, 64-D, the identity basis: exact
for that batch). Batch values sit a little above the training-set value at the end (0.02-0.03)
and below it at the start (0.4-1.7); the default rule informs at NC1 < 0.05 for 3 sampled
steps. Each run takes a few seconds of training on one CPU thread, plus what the SDK costs.

Importing this module imports torch: the CLI imports it lazily, and the ``server`` extra does
not install torch.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from collapsewatch_demo.scenarios.registry import Scenario, register

CLASSES = 5
IN_DIM = 10
HIDDEN = 512
FEATURES = 64
N = 500
CENTRE_SCALE = 1.25
NOISE = 2.0
BATCH_SIZE = 50
EPOCHS = 200
CONTROL_EPOCHS = 3
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-3
#: Fixes the data set, the same for every run and seed.
TASK_SEED = 1234
#: One sampled step an epoch (every=10 with 10 batches an epoch): 200 points on the collapse
#: run, 3 on the control; the adaptive default would sample a run this small only rarely.
DEMO_EVERY = 10
RUNS = ("mlp-200-epochs", "mlp-3-epochs")


def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """The 500 training points and their labels (100 a class)."""
    g = torch.Generator().manual_seed(TASK_SEED)
    centres = torch.randn(CLASSES, IN_DIM, generator=g) * CENTRE_SCALE
    y = torch.arange(N) % CLASSES
    return centres[y] + NOISE * torch.randn(N, IN_DIM, generator=g), y


def build(seed: int = 0) -> nn.Sequential:
    """The MLP (PyTorch's default init, drawn from ``seed``); the global RNG is left as it was."""

    def block(i: int, n_in: int, n_out: int) -> list[tuple[str, nn.Module]]:
        return [
            (f"fc{i}", nn.Linear(n_in, n_out)),
            (f"bn{i}", nn.BatchNorm1d(n_out)),
            (f"act{i}", nn.ReLU()),
        ]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [*block(1, IN_DIM, HIDDEN), *block(2, HIDDEN, HIDDEN), *block(3, HIDDEN, FEATURES)]
        return nn.Sequential(
            OrderedDict([*layers, ("head", nn.Linear(FEATURES, CLASSES, bias=False))])
        )


def fit(
    model: nn.Sequential,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    epochs: int,
    seed: int = 0,
) -> float:
    """A plain training loop with the cosine schedule of the full 200 epochs (so the control is
    the collapse run stopped early); returns the last batch's loss."""
    x, y = dataset()
    steps_per_epoch = N // BATCH_SIZE
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS * steps_per_epoch)
    g = torch.Generator().manual_seed(seed)
    loss = torch.tensor(math.nan)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(N, generator=g)
        for start in range(0, N, BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            loss = criterion(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return loss.item()


@torch.no_grad()
def nc1_of(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Brute force tr(Sigma_W Sigma_B^+)/C in float64 (mu_G the mean of the class means)."""
    h = features.double()
    means = torch.stack([h[labels == c].mean(0) for c in range(CLASSES)])
    centred = means - means.mean(0)
    dev = h - means[labels]
    sigma_w = dev.T @ dev / h.shape[0]
    sigma_b = centred.T @ centred / CLASSES
    return float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True))) / CLASSES


@torch.no_grad()
def evaluate(model: nn.Sequential) -> dict[str, float]:
    """Training accuracy and NC1 of the whole training set, with batch statistics as trained
    (BatchNorm in training mode, on the full set: the statistics NC1 is about)."""
    x, y = dataset()
    features = model[:-1](x)
    logits = model.head(features)
    return {
        "train_accuracy": float((logits.argmax(1) == y).float().mean()),
        "nc1_train_set": nc1_of(features, y),
    }


def train_neural_collapse(
    *,
    epochs: int,
    run: str,
    project: str = "demo",
    server: str | None = None,
    token: str | None = None,
    seed: int = 0,
    every: int | None = DEMO_EVERY,
    http_client: Any = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Train one run of the recipe under collapsewatch (the two SDK lines around :func:`fit`)
    and return a summary: run name and id, final loss, training accuracy and NC1 of the whole
    training set (brute force), wall time and the monitor's counters."""
    import collapsewatch

    started = time.perf_counter()
    model = build(seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    criterion = nn.CrossEntropyLoss()
    config = {
        "recipe": "neural-collapse",
        "model": f"MLP {IN_DIM}-{HIDDEN}-{HIDDEN}-{FEATURES} BN+ReLU, bias-free head",
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "seed": seed,
    }
    monitor = collapsewatch.watch(
        model,
        optimizer=optimizer,
        criterion=criterion,
        project=project,
        run=run,
        server=server,
        token=token,
        every=every,
        config=config,
        http_client=http_client,
    )
    final_loss = fit(model, optimizer, criterion, epochs=epochs, seed=seed)
    monitor.finish()
    summary: dict[str, Any] = {
        "run": run,
        "run_id": str(monitor.run_id),
        "epochs": epochs,
        "seed": seed,
        "final_loss": final_loss,
        **evaluate(model),
        "seconds": time.perf_counter() - started,
        "sdk": monitor.stats,
    }
    log(
        f"{run}: {epochs} epochs, final loss {final_loss:.4f}, train accuracy "
        f"{summary['train_accuracy']:.0%}, NC1 of the training set {summary['nc1_train_set']:.3g}"
        f" ({summary['seconds']:.1f}s, run id {summary['run_id']})"
    )
    return summary


register(
    Scenario(
        name="neural_collapse",
        family="neural_collapse",
        summary="MLP 10-512-512-64 on 5 overlapping Gaussian classes, SGD with weight decay and a "
        "cosine schedule: after 200 epochs each class sits on its mean (NC1 1.2 -> 0.01); "
        "stopped after 3 epochs it does not (0.9).",
        train=train_neural_collapse,
        collapse={"epochs": EPOCHS},
        control={"epochs": CONTROL_EPOCHS},
        indicator="nc1",
        probe="head",
        runs=RUNS,
        fast=False,
    )
)
