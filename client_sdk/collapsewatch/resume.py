"""Resuming a run: ``watch(..., run_id=..., resume=True)`` continues a run after a restart.

Run ids are made on the client, so a job restarted from a checkpoint names the run it had and
its records join that run. The step counter goes on from where the run was:

- the trainer's own step when the caller knows it (``start_step=``: the integrations pass
  Lightning's and Hugging Face's ``global_step``, restored from the checkpoint), else
- one past the last step the server stored (``GET /api/v1/runs/{run_id}``), else 0.

Steps up to the last one stored are not sampled again (a checkpoint older than the crash
replays steps the server has): no duplicate points. The run keeps the steps it resumed at in
its config (``collapsewatch.resumed``), and the run page marks them: a gap between the last
step before and the first after is the training lost to the restart.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from collapsewatch.config import Settings

logger = logging.getLogger("collapsewatch")

#: The run config key that lists the steps a run resumed at.
RESUMED_KEY = "collapsewatch.resumed"


@dataclass(frozen=True)
class Resumed:
    """Where a resumed run stands."""

    run_id: uuid.UUID
    first_step: int  # the step the counter starts at
    stored_until: int  # the last step the server had (-1: none); not sampled again
    resumed_at: list[int] = field(default_factory=list)  # for the run config


def parse_run_id(value: str | uuid.UUID | None) -> uuid.UUID | None:
    """A run id from a string or UUID; ``ValueError`` names the option when it is not one."""
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValueError(f"collapsewatch: run_id must be a UUID, got {value!r}") from None


def resume(
    run_id: uuid.UUID,
    settings: Settings,
    client: httpx.Client | None,
    start_step: int | None,
) -> Resumed:
    """Where ``run_id`` stands on the server; never raises (an unreachable server starts the
    run at ``start_step`` or 0, and says so)."""
    stored = _stored_run(run_id, settings, client)
    last = stored.get("last_step") if stored else None
    last = int(last) if isinstance(last, int) else -1
    first = start_step if start_step is not None else last + 1
    config = stored.get("config") if stored else None
    before = config.get(RESUMED_KEY) if isinstance(config, dict) else None
    earlier = [int(s) for s in before if isinstance(s, int)] if isinstance(before, list) else []
    if stored is not None and first <= last:
        logger.info(
            "collapsewatch: resuming run %s at step %d; the server has steps up to %d, "
            "which are not sampled again",
            run_id,
            first,
            last,
        )
    return Resumed(run_id, max(0, first), last, [*earlier, max(0, first)])


def _stored_run(
    run_id: uuid.UUID, settings: Settings, client: httpx.Client | None
) -> dict[str, Any] | None:
    url = f"{settings.server}/api/v1/runs/{run_id}"
    own = client is None
    http = client or httpx.Client(timeout=5.0)
    try:
        auth = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        response = http.get(url, headers=auth)
    except Exception as exc:  # offline: the run goes on from the caller's step
        logger.warning("collapsewatch: could not ask %s where run %s stands: %r", url, run_id, exc)
        return None
    finally:
        if own:
            http.close()
    if response.status_code == 404:
        return None  # a new run under a chosen id
    if response.status_code != 200:
        logger.warning(
            "collapsewatch: %s answered HTTP %d; resuming run %s from the trainer's step "
            "(a read token may be needed)",
            url,
            response.status_code,
            run_id,
        )
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
