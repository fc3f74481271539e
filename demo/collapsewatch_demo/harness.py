"""One trainer for every recipe: a recipe is its model, data, optimizer and collapse mechanism.

:func:`run_watched` trains a recipe under the SDK (the demo's scenarios use it as it is);
:func:`train` adds the brute-force reference the validation suite judges against.

A :class:`Recipe` builds a :class:`Setup` (model, optimizer, criterion, the fixed held-out
inputs of its brute-force reference) and draws batches; :func:`train` runs it the way a new
user would: ``collapsewatch.watch(model, optimizer=..., criterion=...)`` with the SDK's default
sampling (never ``every=``), plus the family's explicit logger where the recipe calls one, on
one torch thread. The training loop keeps a copy of the weights every ``steps / 100`` steps and
nothing else, so the reference costs the monitored loop no time; after training, each copy is
loaded into a twin of the model (a second build, never handed to the SDK), and the reference
is computed on the held-out batch from the raw outputs of the recipe's layers.

Only the SDK's public API is used: ``watch``, the monitor's ``log_*`` methods, ``finish``,
``run_id`` and ``stats``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from collapsewatch_demo.reference import Reference, as_units, effective_rank, room

Batch = tuple[torch.Tensor, ...]
#: Evaluations of the reference over a run (plus the initial and the final weights).
REFERENCE_POINTS = 100
#: Seed of the augmentation that makes the held-out view of a self-supervised recipe.
HELDOUT_VIEW_SEED = 7


@dataclass
class Setup:
    """What a recipe builds: the watched model, its optimizer and criterion (an ``nn.Module``,
    so the SDK's hook sees the loss), and the held-out inputs the reference is computed on."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    heldout: torch.Tensor
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    #: Parts the recipe's own steps need (a predictor outside the watched model, ...).
    parts: dict[str, Any] = field(default_factory=dict)
    #: Further keyword arguments of ``watch()`` the model needs (``blocks=model.blocks``).
    watch: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe(ABC):
    """A training run. Subclasses are frozen dataclasses whose fields are the hyperparameters,
    so a collapse/control pair is two instances differing only in the collapse mechanism.

    ``build`` runs under ``torch.manual_seed(seed)``; ``batch`` draws from a generator seeded
    with ``seed``, so the data does not depend on what else draws random numbers.
    """

    #: Family of the server's indicator catalogue the collapse belongs to (e.g. "dead_units").
    family: ClassVar[str]
    #: Explicit loggers the recipe calls besides the two SDK lines (names of Monitor methods).
    loggers: ClassVar[tuple[str, ...]] = ()

    steps: int = 300
    seed: int = 0

    @abstractmethod
    def build(self) -> Setup: ...

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        """The batch of ``step``, drawn from ``generator``. A recipe whose data are not drawn
        batch by batch (epochs over a fixed set, generations) overrides :meth:`train_step`."""
        raise NotImplementedError(f"{type(self).__name__}: override batch() or train_step()")

    def reference(self) -> Reference:
        """The brute-force truth :func:`train` computes (the validation suite's recipes);
        a demo scenario trained with :func:`run_watched` alone needs none."""
        raise NotImplementedError(f"{type(self).__name__} has no brute-force reference")

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        """The training loss of one batch; the default is ``criterion(model(x), y)``.
        Recipes with an explicit logger call it here (``monitor.log_codes(...)``)."""
        x, y = batch
        return setup.criterion(setup.model(x), y)

    def train_step(
        self, setup: Setup, step: int, generator: torch.Generator, monitor: Any
    ) -> float:
        """One optimisation step; returns the loss. Override for several optimizers, or for
        data that are not drawn batch by batch (then call :meth:`optimise`)."""
        return self.optimise(setup, self.loss(setup, self.batch(step, generator), monitor))

    def optimise(self, setup: Setup, loss: torch.Tensor) -> float:
        """Backpropagate ``loss``, step the optimizer (and the scheduler); return the loss."""
        setup.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        setup.optimizer.step()
        if setup.scheduler is not None:
            setup.scheduler.step()
        return float(loss.detach())

    def reference_forward(self, model: nn.Module, heldout: torch.Tensor) -> None:
        """The forward pass the reference reads the layers' outputs from."""
        model(heldout)

    def reference_values(self, model: nn.Module, heldout: torch.Tensor) -> dict[str, float] | None:
        """The reference of each of ``reference().layers``, computed by the recipe from the
        whole model (under ``no_grad``, in training mode), for truths that are not a measure of
        one layer's output rows: attention probabilities, states of long sequences, generated
        samples, features by class. None (the default): measure the layers' outputs."""
        return None


class TwoViews(Recipe):
    """A self-supervised recipe: a batch is two views of the same inputs (``views``), and the
    loss is the criterion of the model's outputs on each. The SDK only ever sees views, so
    the reference is measured on one view of the held-out inputs (``heldout_view``): the
    same distribution, not the clean inputs the augmentation was designed to hide."""

    @abstractmethod
    def view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...

    def views(self, x: torch.Tensor, generator: torch.Generator) -> Batch:
        return self.view(x, generator), self.view(x, generator)

    def heldout_view(self, x: torch.Tensor) -> torch.Tensor:
        return self.view(x, torch.Generator().manual_seed(HELDOUT_VIEW_SEED))

    def loss(self, setup: Setup, batch: Batch, monitor: Any) -> torch.Tensor:
        v1, v2 = batch
        return setup.criterion(setup.model(v1), setup.model(v2))


@dataclass
class Trained:
    """One run trained under the SDK: its id on the server (None when not monitored), the
    wall time of the training loop (SDK included) and of ``finish()``, the loss per step and
    the SDK's counters."""

    run_id: str | None
    seconds: float
    finish_seconds: float
    losses: list[float]
    sdk: dict[str, int]


@dataclass
class RunResult(Trained):
    """What one run did (:class:`Trained`), its steps, the reference of each layer at each
    evaluated step and the first step where the truth crosses the family's threshold (None:
    never)."""

    steps: int
    reference: Reference
    evaluated: list[int]
    values: dict[str, list[float]]
    crossed_at: int | None

    def worst(self) -> list[float]:
        """The most collapsed layer's value at each evaluated step."""
        names = list(self.values)
        return [
            self.reference.worst({n: self.values[n][i] for n in names})
            for i in range(len(self.evaluated))
        ]

    def layers_beyond(self) -> list[str]:
        """The layers whose reference crosses the threshold at some evaluated step."""
        return [n for n, vs in self.values.items() if any(map(self.reference.beyond, vs))]


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread, the caller's count restored after.

    The models are tiny: more threads gain nothing, and on a busy machine threads waiting for
    each other made runs 5-20x slower (a VAE run: 460 s instead of 19 s).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_watched(
    recipe: Recipe,
    *,
    server: str | None = None,
    project: str = "validation",
    run: str | None = None,
    token: str | None = None,
    every: int | None = None,
    http_client: Any = None,
    before_step: Callable[[int, nn.Module], object] | None = None,
) -> Trained:
    """Build ``recipe`` under its seed and train it watched by the SDK when ``server`` is
    given (``watch(..., enabled=False)`` otherwise), on one torch thread; the caller's random
    state is left as it was. ``every=None`` is the SDK's adaptive sampling. The run's config
    is the recipe's name and fields. ``before_step(step, model)`` runs before each step and
    once after the last (step ``recipe.steps``), outside the timed loop's SDK calls."""
    import collapsewatch

    with one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        setup = recipe.build()
        monitor = collapsewatch.watch(
            setup.model,
            optimizer=setup.optimizer,
            criterion=setup.criterion,
            project=project,
            run=run,
            server=server,
            token=token,
            every=every,
            http_client=http_client,
            enabled=server is not None,
            config={"recipe": type(recipe).__name__, **dataclasses.asdict(recipe)},
            **setup.watch,
        )
        generator = torch.Generator().manual_seed(recipe.seed)
        losses: list[float] = []
        started = time.perf_counter()
        for step in range(recipe.steps):
            if before_step is not None:
                before_step(step, setup.model)
            losses.append(recipe.train_step(setup, step, generator, monitor))
        seconds = time.perf_counter() - started
        if before_step is not None:
            before_step(recipe.steps, setup.model)
        started = time.perf_counter()
        monitor.finish()
        finish_seconds = time.perf_counter() - started
    return Trained(
        run_id=str(monitor.run_id) if server is not None else None,
        seconds=seconds,
        finish_seconds=finish_seconds,
        losses=losses,
        sdk=dict(monitor.stats) if server is not None else {},
    )


def train(
    recipe: Recipe,
    *,
    server: str | None = None,
    project: str = "validation",
    run: str | None = None,
    log: Callable[[str], object] = print,
) -> RunResult:
    """Train ``recipe`` with :func:`run_watched` (unmonitored when ``server`` is None, to
    check recipes quickly), keeping a copy of the weights every ``steps / 100`` steps, then
    compute its reference on a twin of the model."""
    with torch.random.fork_rng(devices=[]):
        # a second build is the twin: the same model, never handed to the SDK
        torch.manual_seed(recipe.seed)
        twin = recipe.build()
    every = max(1, recipe.steps // REFERENCE_POINTS)
    snapshots: list[tuple[int, dict[str, torch.Tensor]]] = []

    def keep(step: int, model: nn.Module) -> None:
        if step % every == 0 or step == recipe.steps:
            snapshots.append((step, _weights(model)))

    trained = run_watched(recipe, server=server, project=project, run=run, before_step=keep)
    ref = recipe.reference()
    snapshots = [(s, w) for s, w in snapshots if s >= ref.from_step]
    with one_thread():
        values = evaluate(recipe, twin.model, twin.heldout, snapshots)
    evaluated = [s for s, _ in snapshots]
    result = RunResult(
        **vars(trained),
        steps=recipe.steps,
        reference=ref,
        evaluated=evaluated,
        values=values,
        crossed_at=None,
    )
    result.crossed_at = next(
        (s for s, v in zip(evaluated, result.worst(), strict=True) if ref.beyond(v)), None
    )
    last = ", ".join(f"{n} {vs[-1]:.3g}" for n, vs in values.items())
    log(
        f"{run or type(recipe).__name__}: {recipe.steps} steps in {trained.seconds:.1f}s, "
        f"{ref.indicator} at the end {last}, crossed at "
        f"{'never' if result.crossed_at is None else result.crossed_at}"
    )
    return result


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def evaluate(
    recipe: Recipe,
    twin: nn.Module,
    heldout: torch.Tensor,
    snapshots: Sequence[tuple[int, dict[str, torch.Tensor]]],
) -> dict[str, list[float]]:
    """The reference of every layer at every snapshot, on the held-out batch (by the recipe's
    ``reference_values`` when it has them), each over its first value for a relative reference.

    The twin runs in training mode, so a BatchNorm normalises with the held-out batch's own
    statistics as it does in training (its running statistics are meaningless in the first
    steps, and the twin's are thrown away with each snapshot); no recipe uses dropout.
    """
    ref = recipe.reference()
    values: dict[str, list[float]] = {n: [] for n in ref.layers}
    if type(recipe).reference_values is not Recipe.reference_values:
        twin.train()
        for _, weights in snapshots:
            twin.load_state_dict(weights)
            measured = recipe.reference_values(twin, heldout)
            if measured is None:
                raise TypeError(f"{type(recipe).__name__}.reference_values gave no values")
            for n in ref.layers:
                values[n].append(measured[n])
        return _relative(values) if ref.relative else values
    modules = dict(twin.named_modules())
    missing = [n for n in ref.layers if n not in modules]
    if missing:
        raise KeyError(f"{type(recipe).__name__}: no module named {missing} in the model")
    data_rank = effective_rank(heldout.detach().to(torch.float64).reshape(len(heldout), -1))
    outputs: dict[str, torch.Tensor] = {}
    handles = [
        modules[n].register_forward_hook(
            lambda _m, _a, out, n=n: outputs.__setitem__(n, as_units(out, ref.unit_dim))
        )
        for n in ref.layers
    ]
    try:
        twin.train()
        for _, weights in snapshots:
            twin.load_state_dict(weights)
            outputs.clear()
            recipe.reference_forward(twin, heldout)
            for n in ref.layers:
                if ref.reads == "weight":  # after the forward: a pruned layer's masked weight
                    weight = modules[n].weight
                    if not isinstance(weight, torch.Tensor):
                        raise TypeError(f"{type(recipe).__name__}: {n} has no weight tensor")
                    values[n].append(ref.measure(weight.detach().to(torch.float64).flatten(1), 0))
                    continue
                rows = outputs[n]
                values[n].append(ref.measure(rows, room(modules[n], rows.shape[1], data_rank)))
    finally:
        for h in handles:
            h.remove()
    return _relative(values) if ref.relative else values


def _relative(values: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each layer's values over its first one."""
    return {n: [v / vs[0] for v in vs] for n, vs in values.items()}


def loss_change_step(
    collapse: Sequence[float], control: Sequence[float], margin: float = 0.1
) -> int | None:
    """The step where the collapse run's loss departs from its control's, or None.

    Both losses are smoothed by a trailing mean over ``w = max(5, steps // 50)`` steps. The
    collapse run departs at step s when ``|collapse_s - control_s|`` exceeds ``margin`` (10%)
    of the control's smoothed loss at s, floored at 1% of the control's first smoothed value
    (a loss falling towards 0 would otherwise make any wiggle a departure), and keeps
    departing for ``2 w`` consecutive steps, longer than one bad batch can move a trailing
    mean; a NaN or infinite loss departs. The answer is the first step of that stretch.
    """
    n = min(len(collapse), len(control))
    w = max(5, n // 50)
    if n < w:
        return None
    a, b = _trailing_mean(collapse[:n], w), _trailing_mean(control[:n], w)
    floor = 0.01 * abs(b[0])
    run = 0
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        apart = not (math.isfinite(x) and math.isfinite(y)) or abs(x - y) > margin * max(
            abs(y), floor
        )
        run = run + 1 if apart else 0
        if run == 2 * w:
            first = i - run + 1  # the stretch's first index; index j smooths steps j..j+w-1
            return first + w - 1
    return None


def _trailing_mean(xs: Sequence[float], w: int) -> list[float]:
    """Mean of each full window of ``w`` values (NaN/inf propagate)."""
    out, total = [], 0.0
    for i, x in enumerate(xs):
        total += x
        if i >= w:
            total -= xs[i - w]
        if i >= w - 1:
            out.append(total / w)
    return out
