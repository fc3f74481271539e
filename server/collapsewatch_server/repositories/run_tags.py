"""Tags of runs: one row per (run, tag); read for many runs at once, replaced whole."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from collapsewatch_server.tables import RunTag


def add(s: Session, run_id: str, tags: Iterable[str]) -> None:
    """Tags of a run being created (the SDK's ``watch(tags=...)``)."""
    s.add_all(RunTag(run_id=run_id, tag=tag) for tag in dict.fromkeys(tags))


def replace(s: Session, run_id: str, tags: Sequence[str]) -> None:
    """A run's tags become ``tags`` (the dashboard's edit)."""
    s.execute(delete(RunTag).where(RunTag.run_id == run_id))
    s.flush()
    add(s, run_id, tags)


def of_runs(s: Session, run_ids: Sequence[str]) -> dict[str, list[str]]:
    """Run id -> its tags in alphabetical order (runs without tags are absent)."""
    out: dict[str, list[str]] = {}
    for start in range(0, len(run_ids), 500):
        rows = s.execute(
            select(RunTag.run_id, RunTag.tag)
            .where(RunTag.run_id.in_(run_ids[start : start + 500]))
            .order_by(RunTag.tag)
        ).all()
        for run_id, tag in rows:
            out.setdefault(run_id, []).append(tag)
    return out


def runs_tagged(tag: str) -> Select[Any]:
    """The ids of the runs carrying ``tag``, as a subquery to filter runs with."""
    return select(RunTag.run_id).where(RunTag.tag == tag)
