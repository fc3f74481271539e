"""Raw statistic records: one per probe and sampled step, as the SDK sent them (encoded).
Written at ingest; read back for windowed indicators and covariance spectra."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import delete, select, union_all
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.codec import Stats, decode_stats
from collapsewatch_server.repositories.sql import UNION_PARTS, bulk_insert, is_postgres
from collapsewatch_server.tables import Probe, Run, StatRecordRow
from collapsewatch_web.api_schemas.charts import SpectrumPublic

#: Records looked at, newest first, for one that carries a spectrum (not every record does).
_SPECTRUM_SCAN = 5000


def add(s: Session, rows: Sequence[tuple[str, int, int, bytes]], now: datetime) -> None:
    """Records as ``(run_id, probe_id, step, encoded statistics)``, received ``now``, by the
    bulk path."""
    # On SQLite the driver would write the time as ``isoformat(" ")`` row by row: once here
    # (the same text; a tenth of the insert's time for a batch of scalars).
    stamp: datetime | str = now if is_postgres(s) else now.isoformat(" ")
    bulk_insert(
        s,
        "stat_records",
        ("run_id", "probe_id", "step", "stats", "received_at"),
        [(*row, stamp) for row in rows],
    )


def delete_older(s: Session, cutoff: datetime, limit: int) -> int:
    """Delete at most ``limit`` records received before ``cutoff`` (records without a time:
    of runs whose last data is before it); how many went."""
    old_runs = select(Run.id).where(Run.last_seen_at < cutoff)
    ids = (
        select(StatRecordRow.id)
        .where(
            (StatRecordRow.received_at < cutoff)
            | (StatRecordRow.received_at.is_(None) & StatRecordRow.run_id.in_(old_runs))
        )
        .limit(limit)
    )
    found = list(s.scalars(ids))
    if found:
        s.execute(
            delete(StatRecordRow)
            .where(StatRecordRow.id.in_(found))
            .execution_options(synchronize_session=False)
        )
    return len(found)


def recent(
    s: Session, run_id: uuid.UUID, before: Mapping[str, int], count: int
) -> dict[str, list[tuple[int, Stats]]]:
    """For each probe name in ``before``, its last ``count`` records with a step below
    ``before[name]``, oldest first, as ``(step, statistics)``.

    One query (per 400 probes): a UNION ALL of one ``ORDER BY step DESC LIMIT count`` per
    probe, each an index range scan on (probe_id, step), so the cost does not grow with the
    run's length. Unknown probes (a run's first batch) have no records.
    """
    if count <= 0 or not before:
        return {}
    out: dict[str, list[tuple[int, Stats]]] = {}
    names = sorted(before)
    ids = dict(
        s.execute(
            select(Probe.name, Probe.id).where(Probe.run_id == str(run_id), Probe.name.in_(names))
        ).all()
    )
    known = [n for n in names if n in ids]
    names_by_id = {pid: name for name, pid in ids.items()}
    for start in range(0, len(known), UNION_PARTS):
        parts = [
            select(StatRecordRow.probe_id, StatRecordRow.step, StatRecordRow.stats)
            .where(StatRecordRow.probe_id == ids[n], StatRecordRow.step < before[n])
            .order_by(StatRecordRow.step.desc())
            .limit(count)
            .subquery()
            .select()
            for n in known[start : start + UNION_PARTS]
        ]
        query = parts[0] if len(parts) == 1 else union_all(*parts)
        for probe_id, step, blob in s.execute(query).all():
            out.setdefault(names_by_id[probe_id], []).append((step, decode_stats(blob)))
    for records in out.values():
        records.sort(key=lambda r: r[0])
    return out


def spectrum(s: Session, run_id: str, probe: str, step: int) -> SpectrumPublic:
    """The covariance eigenvalues of ``probe`` at the newest sampled step at or before
    ``step`` that carries them (else the first one after it); NotFound when none does."""
    probe_id = s.scalar(select(Probe.id).where(Probe.run_id == run_id, Probe.name == probe))
    if probe_id is not None:
        base = select(StatRecordRow.step, StatRecordRow.stats).where(
            StatRecordRow.probe_id == probe_id
        )
        for query in (
            base.where(StatRecordRow.step <= step).order_by(StatRecordRow.step.desc()),
            base.where(StatRecordRow.step > step).order_by(StatRecordRow.step),
        ):
            # streamed (and closed): the spectrum may ride on every 100th record only
            limited = query.limit(_SPECTRUM_SCAN).execution_options(yield_per=256)
            with s.execute(limited) as rows:
                for found, blob in rows:
                    stats = decode_stats(blob)
                    eig = stats.get("eig")
                    if eig is None or isinstance(eig, float):
                        continue
                    width = stats.get("width")
                    return SpectrumPublic(
                        probe=probe,
                        asked=step,
                        step=found,
                        eigenvalues=sorted((float(v) for v in eig), reverse=True),
                        width=int(width) if isinstance(width, float) else None,
                    )
    raise errors.NotFound(errors.SPECTRUM_NOT_FOUND.format(probe=probe, run_id=run_id))
