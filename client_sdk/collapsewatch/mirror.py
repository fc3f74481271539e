"""Beside the user's tracker: a few indicator values logged into W&B, TensorBoard or MLflow.

``watch(..., mirror="wandb" | "tensorboard" | "mlflow")`` (or the tracker object itself: a
``wandb`` run, a ``SummaryWriter``, an ``MlflowClient`` with a run id) puts a small set of
values beside the user's loss curves, computed in the SDK from each sampled step's records
after the host copy, in the sender thread (the training thread pays nothing):

- ``collapsewatch/loss``: the mean loss since the previous sampled step;
- ``collapsewatch/<layer>/effective_rank``: exp of the entropy of the layer's covariance
  spectrum (the server's ``effective_rank``, on one batch);
- ``collapsewatch/<layer>/inactive_fraction``: units never positive on this batch before a
  ReLU (the server's ``dead_fraction`` reads five batches: a single one over-counts);
- ``collapsewatch/<layer>/attention_entropy``: mean normalised attention entropy over heads.

The alerts, windows and every other indicator are the server's. No tracker package is a
dependency: the package is imported only when named, and objects are used by what they have
(duck typing). A tracker that fails is logged once and left alone.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("collapsewatch")

PREFIX = "collapsewatch"
TRACKERS = ("wandb", "tensorboard", "mlflow")

Values = dict[str, float]


def _floats(value: Any) -> list[float]:
    if isinstance(value, list):
        return [float(v) for v in value]
    if isinstance(value, dict) and "f32" in value:  # packed: see schemas.Packed
        import array
        import base64

        arr = array.array("f")
        arr.frombytes(base64.b64decode(value["f32"]))
        if sys.byteorder == "big":
            arr.byteswap()
        return list(arr)
    return [float(value)]


def values_of(records: list[dict[str, Any]]) -> dict[int, Values]:
    """The mirrored values of built records, by step."""
    out: dict[int, Values] = {}
    for record in records:
        stats, probe, kind = record["stats"], record["probe"], record["kind"]
        into = out.setdefault(int(record["step"]), {})
        if kind == "loss" and "mean" in stats:
            into[f"{PREFIX}/loss"] = float(stats["mean"])
        elif kind == "activation":
            if "eig" in stats:
                eig = [max(v, 0.0) for v in _floats(stats["eig"])]
                total = sum(eig)
                if total > 0:
                    entropy = -sum(v / total * math.log(v / total) for v in eig if v > 0)
                    into[f"{PREFIX}/{probe}/effective_rank"] = math.exp(entropy)
            if "pos" in stats and stats.get("n", 0):
                pos = _floats(stats["pos"])
                into[f"{PREFIX}/{probe}/inactive_fraction"] = sum(p <= 0 for p in pos) / len(pos)
        elif kind == "attention" and "ent_sum" in stats:
            pairs = zip(_floats(stats["ent_sum"]), _floats(stats["queries"]), strict=False)
            heads = [e / q for e, q in pairs if q > 0]
            if heads:
                into[f"{PREFIX}/{probe}/attention_entropy"] = sum(heads) / len(heads)
    return {step: v for step, v in out.items() if v}


class Mirror:
    """Logs mirrored values into one tracker; see the module docstring."""

    def __init__(self, log: Callable[[int, Values], None], name: str) -> None:
        self._log = log
        self.name = name
        self._broken = False

    def observe(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sender thread: log the values of freshly built records; return them unchanged."""
        if self._broken:
            return records
        try:
            for step, values in sorted(values_of(records).items()):
                self._log(step, values)
        except Exception:
            self._broken = True
            logger.warning(
                "collapsewatch: mirroring into %s failed; no more values go there (logged once)",
                self.name,
                exc_info=True,
            )
        return records


def make_mirror(target: Any) -> Mirror | None:
    """The mirror of ``watch(..., mirror=target)``, or None (logged) when that tracker is not
    installed or not running. Raises ``ValueError`` for a name that is no tracker."""
    if target is None:
        return None
    if isinstance(target, str):
        if target not in TRACKERS:
            raise ValueError(f"collapsewatch: mirror must be one of {TRACKERS}, got {target!r}")
        target = _running(target)
        if target is None:
            return None
    return _adapter(target)


def _running(name: str) -> Any:
    """The tracker already running in this process, or None (said once)."""
    try:
        if name == "wandb":
            import wandb  # type: ignore[import-not-found]

            run = wandb.run
            if run is None:
                logger.warning("collapsewatch: mirror='wandb' but no wandb run: call wandb.init()")
            return run
        if name == "mlflow":
            import mlflow  # type: ignore[import-not-found]

            active = mlflow.active_run()
            if active is None:
                logger.warning("collapsewatch: mirror='mlflow' but no active MLflow run")
                return None
            return _MlflowRun(mlflow.MlflowClient(), active.info.run_id)
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter()  # the runs/ folder TensorBoard reads by default
    except ImportError as exc:
        logger.warning("collapsewatch: mirror=%r but %s is not installed", name, exc.name)
        return None


class _MlflowRun:
    """An MLflow client bound to the run that was active in ``watch()`` (MLflow's active run
    is per thread; the sender thread logs by id)."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id


def _adapter(target: Any) -> Mirror:
    if isinstance(target, _MlflowRun):
        client, run_id = target.client, target.run_id

        def to_mlflow(step: int, values: Values) -> None:
            for key, value in values.items():  # MLflow keys take no "/" in some stores
                client.log_metric(run_id, key.replace("/", "."), value, step=step)

        return Mirror(to_mlflow, "mlflow")
    if callable(getattr(target, "add_scalar", None)):  # a TensorBoard SummaryWriter

        def to_tensorboard(step: int, values: Values) -> None:
            for key, value in values.items():
                target.add_scalar(key, value, global_step=step)

        return Mirror(to_tensorboard, "tensorboard")
    if callable(getattr(target, "log", None)) and callable(getattr(target, "define_metric", None)):
        # a wandb run: its step is the user's, ours is a metric of its own, and the values
        # join the user's next row instead of making rows (commit=False)
        target.define_metric(f"{PREFIX}/step")
        target.define_metric(f"{PREFIX}/*", step_metric=f"{PREFIX}/step")

        def to_wandb(step: int, values: Values) -> None:
            target.log({f"{PREFIX}/step": step, **values}, commit=False)

        return Mirror(to_wandb, "wandb")
    raise ValueError(
        f"collapsewatch: mirror={target!r} is no tracker: pass 'wandb', 'tensorboard', "
        "'mlflow', a SummaryWriter or a wandb run"
    )
