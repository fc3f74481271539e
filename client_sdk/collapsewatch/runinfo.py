"""What the SDK tells the server about a run: its metadata and its probes."""

from __future__ import annotations

import socket
import sys
import uuid
from datetime import datetime
from typing import Any

from collapsewatch._version import __version__
from collapsewatch.config import jsonable
from collapsewatch.schemas import FamilyCoverage, ProbeInfo, RunInfo


def run_config(
    config: dict[str, Any] | None, optimizer: Any, criterion: Any, every: int | None
) -> dict[str, Any]:
    """The user's config (made JSON-safe) plus what the SDK can tell cheaply; user keys win."""
    extra: dict[str, Any] = {"sampling_every": every if every is not None else "adaptive"}
    if optimizer is not None:
        extra["optimizer"] = type(optimizer).__name__
        groups = getattr(optimizer, "param_groups", None) or [{}]
        lr = groups[0].get("lr")
        if isinstance(lr, int | float):
            extra["lr"] = lr
    if criterion is not None:
        extra["criterion"] = type(criterion).__name__
    return {**extra, **(jsonable(config) if config else {})}


def build(
    *,
    run_id: uuid.UUID,
    project: str,
    name: str,
    config: dict[str, Any],
    started_at: datetime,
    probes: list[ProbeInfo],
    coverage: dict[str, FamilyCoverage] | None = None,
    sampling_every: int | None = None,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """A validated ``RunInfo`` as a JSON-ready dict, built once and reused by every batch
    until something in it changes."""
    torch = sys.modules.get("torch")
    info = RunInfo(
        run_id=run_id,
        project=project,
        name=name,
        config=config,
        host=socket.gethostname()[:256],
        torch_version=str(getattr(torch, "__version__", ""))[:64],
        sdk_version=__version__,
        started_at=started_at,
        probes=probes,
        coverage=coverage or {},
        sampling_every=sampling_every,
        tags=tags or [],
    )
    # no "tags" key without tags: a server older than the field refuses unknown fields
    return info.model_dump(mode="json", exclude=None if tags else {"tags"})
