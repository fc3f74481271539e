"""The two public functions; kept out of ``__init__`` so the package namespace stays tiny."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collapsewatch.config import WatchOptions
from collapsewatch.monitor import Monitor
from collapsewatch.open_runs import finish_all

if TYPE_CHECKING:
    import torch
    from torch import nn
    from typing_extensions import Unpack


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    criterion: Any = None,
    **options: Unpack[WatchOptions],
) -> Monitor:
    """Start watching ``model`` and return the run's :class:`Monitor`.

    Keyword options (:class:`collapsewatch.config.WatchOptions`):

    Args:
        model: the network; its ``nn.Linear`` and ``nn.ConvNd`` outputs and its trainable
            parameters are observed, in model order.
        optimizer: counts steps through its step hooks and gives update norms. Without it,
            call ``monitor.step()`` once per training step.
        criterion: an ``nn.Module`` loss (e.g. ``nn.CrossEntropyLoss()``) whose output is
            recorded; otherwise pass ``loss=`` to ``monitor.step()``.
        project, run: names (letters, digits, ``_.-``); default ``$COLLAPSEWATCH_PROJECT`` or
            ``"default"``, and ``$COLLAPSEWATCH_RUN`` or ``run-YYYYmmdd-HHMMSS``.
        server, token: default ``$COLLAPSEWATCH_SERVER`` (else ``http://127.0.0.1:8420``) and
            ``$COLLAPSEWATCH_TOKEN``.
        every: sample one step in ``every``; ``None`` adapts the interval (from 10, doubling up
            to 1000) so the SDK stays within about 3% of the training time.
        config: hyperparameters to store with the run (JSON-safe values, others as text).
        tags: labels of the run (letters, digits, ``_.:-``; at most 32), set on the run when
            the server first hears of it; the runs list filters on them.
        http_client: an ``httpx.Client`` to send with (tests pass Starlette's ``TestClient``).
        spool_dir: where batches go while the server is unreachable; default
            ``$COLLAPSEWATCH_SPOOL_DIR`` or ``~/.cache/collapsewatch/spool``.
        enabled: ``False`` returns a monitor that does nothing, as do
            ``COLLAPSEWATCH_DISABLED=1`` and data-parallel ranks other than 0.
        classifier: the layer whose input are the penultimate features and whose output the
            logits, for the neural-collapse statistics (with integer labels from the
            criterion or ``monitor.step(labels=...)``). By default it is the ``nn.Linear``
            whose output the criterion receives, found on the first sampled step.
        blocks: transformer blocks whose ``[batch, seq, dim]`` outputs (the residual stream)
            get token statistics, besides every ``nn.TransformerEncoderLayer`` and
            ``nn.TransformerDecoderLayer``, which are found on their own. A block's forward
            takes the hidden states first, may take a ``*key_padding_mask`` (True = padding),
            and returns them (or a tuple starting with them), batch first. Give whole blocks,
            not their attention sublayers: those are similar by nature and would false-alarm.

    Raises:
        ValueError: for an invalid project, run name or tag, ``every < 1`` or a block that is not
            part of ``model``; nothing is raised once training runs.
    """
    return Monitor(model, optimizer, criterion, **options)


def finish(timeout: float = 10.0) -> None:
    """Finish every monitor still running (also done at interpreter exit)."""
    finish_all(timeout)
