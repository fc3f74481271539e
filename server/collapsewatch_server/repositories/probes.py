"""Probes of a run: the places of the model the SDK observes, in model order."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from collapsewatch.schemas import IngestBatch, ProbeKind
from collapsewatch_server.tables import Probe
from collapsewatch_web.api_schemas.runs import ProbePublic

#: Probes the SDK did not announce are listed after the announced ones.
_UNANNOUNCED_ORDER = 1_000_000


def ids_of_run(s: Session, run_id: str) -> dict[str, int]:
    """Probe name -> id for every probe of the run."""
    rows = s.execute(select(Probe.name, Probe.id).where(Probe.run_id == run_id)).all()
    return {name: pid for name, pid in rows}


def unknown(batch: IngestBatch, ids: dict[str, int]) -> bool:
    """Whether the batch announces or has records (or a scalar column) of a probe not in
    ``ids``."""
    return (
        any(p.name not in ids for p in batch.run.probes)
        or any(r.probe not in ids for r in batch.records)
        or any(c.probe not in ids for c in batch.scalars)
    )


def save_from_batch(s: Session, run_id: str, batch: IngestBatch) -> dict[str, int]:
    """Probe name -> id for every probe of the run, adding those the batch announces or has
    records or scalar columns of (unannounced ones after the announced, records first)."""
    existing = ids_of_run(s, run_id)
    new: dict[str, Probe] = {}
    for info in batch.run.probes:
        if info.name not in existing and info.name not in new:
            new[info.name] = Probe(
                run_id=run_id,
                name=info.name,
                kind=info.kind.value,
                module=info.module,
                order=info.order,
                width=info.width,
                params=info.params,
            )
    named = [(r.probe, r.kind) for r in batch.records]
    named += [(c.probe, ProbeKind.scalar) for c in batch.scalars]
    for i, (name, kind) in enumerate(named):
        if name not in existing and name not in new:
            new[name] = Probe(
                run_id=run_id, name=name, kind=kind.value, order=_UNANNOUNCED_ORDER + i
            )
    if new:
        s.add_all(new.values())
        s.flush()
        existing.update({name: p.id for name, p in new.items()})
    return existing


def of_run(s: Session, run_id: str) -> list[ProbePublic]:
    """The probes of a run in model order."""
    probes = s.scalars(
        select(Probe).where(Probe.run_id == run_id).order_by(Probe.order, Probe.id)
    ).all()
    return [
        ProbePublic(
            name=p.name,
            kind=ProbeKind(p.kind),
            module=p.module,
            order=p.order,
            width=p.width,
            params=p.params,
        )
        for p in probes
    ]


def id_of(s: Session, run_id: str, name: str) -> int | None:
    """The id of a run's probe of that name, or None."""
    return s.scalar(select(Probe.id).where(Probe.run_id == run_id, Probe.name == name))
