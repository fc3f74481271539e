"""Runs: ingest of statistics into probes, raw records and indicator points; and the reads."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from collapsewatch.schemas import IngestBatch, IngestResult, ProbeKind, RunStatus
from collapsewatch_server import errors
from collapsewatch_server.downsample import minmax_downsample
from collapsewatch_server.models import (
    IngestedBatch,
    Point,
    Probe,
    Project,
    Run,
    Series,
    StatRecordRow,
    utcnow,
)
from collapsewatch_server.store.alerts import open_alerts_count
from collapsewatch_server.store.base import NewPoint, StoreBase
from collapsewatch_web.api_schemas.runs import (
    PointEvent,
    ProbePublic,
    ProjectPublic,
    RunDetail,
    RunPublic,
    SeriesKey,
    SeriesPoints,
)

#: Probes the SDK did not announce are listed after the announced ones.
_UNANNOUNCED_ORDER = 1_000_000


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class RunStore(StoreBase):
    """Runs, their probes, statistics and indicator points; ingest and reads."""

    # ------------------------------------------------------------------------------ ingest

    def save_batch(
        self,
        batch: IngestBatch,
        encoded_stats: Sequence[bytes],
        indicator_values: Sequence[dict[str, float]],
    ) -> IngestResult:
        """Store one batch atomically: run, probes, raw statistics and indicator points.

        ``encoded_stats[i]`` and ``indicator_values[i]`` belong to ``batch.records[i]``. A batch
        id already stored stores nothing and answers ``duplicate=True``.
        """
        try:
            return self._save_batch(batch, encoded_stats, indicator_values)
        except IntegrityError:
            # A concurrent request stored the same batch (or created the same project or run)
            # first; our transaction rolled back whole. Re-check, then try once more.
            if self._batch_seen(batch.batch_id):
                return self._duplicate(batch)
            return self._save_batch(batch, encoded_stats, indicator_values)

    def _batch_seen(self, batch_id: uuid.UUID) -> bool:
        with self._sessions() as s:
            return s.get(IngestedBatch, str(batch_id)) is not None

    @staticmethod
    def _duplicate(batch: IngestBatch) -> IngestResult:
        return IngestResult(
            batch_id=batch.batch_id, run_id=batch.run.run_id, duplicate=True, records=0, points=0
        )

    def _save_batch(
        self,
        batch: IngestBatch,
        encoded_stats: Sequence[bytes],
        indicator_values: Sequence[dict[str, float]],
    ) -> IngestResult:
        now = utcnow()
        with self._sessions.begin() as s:
            if s.get(IngestedBatch, str(batch.batch_id)) is not None:
                return self._duplicate(batch)
            project = self._project(s, batch.run.project)
            run = self._upsert_run(s, batch, project, now)
            s.flush()  # no ORM relationships: order the inserts ourselves
            # Claim the batch id first: a concurrent twin blocks here and then fails.
            s.add(IngestedBatch(batch_id=str(batch.batch_id), run_id=run.id, records=0))
            s.flush()
            probes = self._upsert_probes(s, run.id, batch)
            series = self._upsert_series(s, run.id, probes, batch, indicator_values)

            stat_rows = []
            point_rows = []
            new_points: list[NewPoint] = []
            for record, blob, values in zip(
                batch.records, encoded_stats, indicator_values, strict=True
            ):
                probe_id = probes[record.probe]
                stat_rows.append(
                    {"run_id": run.id, "probe_id": probe_id, "step": record.step, "stats": blob}
                )
                for name, value in values.items():
                    point_rows.append(
                        {
                            "series_id": series[(probe_id, name)],
                            "step": record.step,
                            "value": _finite_or_none(value),
                        }
                    )
                    new_points.append(NewPoint(probe_id, record.probe, name, record.step, value))
            if stat_rows:
                s.execute(StatRecordRow.__table__.insert(), stat_rows)
            if point_rows:
                stmt = self._insert(Point).on_conflict_do_nothing(
                    index_elements=["series_id", "step"]
                )
                s.execute(stmt, point_rows)
            s.get_one(IngestedBatch, str(batch.batch_id)).records = len(stat_rows)
            # Alert rules see the points in the same transaction that stores them.
            new_points.sort(key=lambda p: p.step)
            self._on_points(s, project, run, new_points)
        return IngestResult(
            batch_id=batch.batch_id,
            run_id=batch.run.run_id,
            duplicate=False,
            records=len(stat_rows),
            points=len(point_rows),
        )

    def _upsert_run(self, s: Session, batch: IngestBatch, project: Project, now: datetime) -> Run:
        info = batch.run
        run = s.get(Run, str(info.run_id))
        if run is None:
            run = Run(
                id=str(info.run_id),
                project_id=project.id,
                name=info.name,
                status=RunStatus.running.value,
                config=info.config,
                host=info.host,
                torch_version=info.torch_version,
                sdk_version=info.sdk_version,
                started_at=info.started_at,
                last_seen_at=now,
            )
            s.add(run)
        elif run.project_id != project.id:
            actual = s.get_one(Project, run.project_id).name
            raise errors.Conflict(
                errors.RUN_IN_OTHER_PROJECT.format(
                    run_id=info.run_id, actual=actual, given=project.name
                )
            )
        run.last_seen_at = now
        run.stalled_notified_at = None  # alive again: a later silence is a new nodata event
        if batch.records:
            top = max(r.step for r in batch.records)
            run.last_step = top if run.last_step is None else max(run.last_step, top)
        if batch.status is not None and batch.status != RunStatus.running:
            run.status = batch.status.value
            run.finished_at = now
        return run

    def _upsert_probes(self, s: Session, run_id: str, batch: IngestBatch) -> dict[str, int]:
        existing = {
            name: pid
            for name, pid in s.execute(
                select(Probe.name, Probe.id).where(Probe.run_id == run_id)
            ).all()
        }
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
        for i, record in enumerate(batch.records):
            if record.probe not in existing and record.probe not in new:
                new[record.probe] = Probe(
                    run_id=run_id,
                    name=record.probe,
                    kind=record.kind.value,
                    order=_UNANNOUNCED_ORDER + i,
                )
        if new:
            s.add_all(new.values())
            s.flush()
            existing.update({name: p.id for name, p in new.items()})
        return existing

    def _upsert_series(
        self,
        s: Session,
        run_id: str,
        probes: dict[str, int],
        batch: IngestBatch,
        indicator_values: Sequence[dict[str, float]],
    ) -> dict[tuple[int, str], int]:
        existing = {
            (pid, ind): sid
            for pid, ind, sid in s.execute(
                select(Series.probe_id, Series.indicator, Series.id).where(Series.run_id == run_id)
            ).all()
        }
        new: dict[tuple[int, str], Series] = {}
        for record, values in zip(batch.records, indicator_values, strict=True):
            pid = probes[record.probe]
            for name in values:
                key = (pid, name)
                if key not in existing and key not in new:
                    new[key] = Series(run_id=run_id, probe_id=pid, indicator=name)
        if new:
            s.add_all(new.values())
            s.flush()
            existing.update({key: ser.id for key, ser in new.items()})
        return existing

    # ------------------------------------------------------------------------------- reads

    def list_projects(self) -> list[ProjectPublic]:
        with self._sessions() as s:
            rows = s.execute(
                select(Project.name, Project.created_at, func.count(Run.id))
                .outerjoin(Run, Run.project_id == Project.id)
                .group_by(Project.id)
                .order_by(Project.name)
            ).all()
        return [ProjectPublic(name=n, created_at=c, runs=k) for n, c, k in rows]

    def _status(self, run: Run, now: datetime) -> RunStatus:
        if run.status == RunStatus.running and now - run.last_seen_at > self.stalled_after:
            return RunStatus.stalled
        return RunStatus(run.status)

    def _run_public(
        self, run: Run, project: str, now: datetime, open_alerts: int = 0
    ) -> dict[str, object]:
        return {
            "run_id": uuid.UUID(run.id),
            "project": project,
            "name": run.name,
            "status": self._status(run, now),
            "started_at": run.started_at,
            "last_seen_at": run.last_seen_at,
            "finished_at": run.finished_at,
            "last_step": run.last_step,
            "open_alerts": open_alerts,
        }

    def list_runs(self, project: str | None = None, limit: int = 500) -> list[RunPublic]:
        """Runs newest first, optionally of one project (unknown project: NotFound)."""
        now = datetime.now(UTC)
        with self._sessions() as s:
            query = select(Run, Project.name, open_alerts_count()).join(
                Project, Project.id == Run.project_id
            )
            if project is not None:
                if s.scalar(select(Project.id).where(Project.name == project)) is None:
                    raise errors.NotFound(errors.PROJECT_NOT_FOUND.format(project=project))
                query = query.where(Project.name == project)
            rows = s.execute(query.order_by(Run.started_at.desc()).limit(limit)).all()
        return [RunPublic.model_validate(self._run_public(r, p, now, n)) for r, p, n in rows]

    def get_run(self, run_id: uuid.UUID) -> RunDetail:
        now = datetime.now(UTC)
        with self._sessions() as s:
            run, project = self._get_run(s, run_id)
            open_alerts = s.scalar(select(open_alerts_count()).where(Run.id == run.id)) or 0
            probes = s.scalars(
                select(Probe).where(Probe.run_id == run.id).order_by(Probe.order, Probe.id)
            ).all()
            return RunDetail.model_validate(
                {
                    **self._run_public(run, project, now, open_alerts),
                    "config": run.config,
                    "host": run.host,
                    "torch_version": run.torch_version,
                    "sdk_version": run.sdk_version,
                    "probes": [
                        ProbePublic(
                            name=p.name,
                            kind=ProbeKind(p.kind),
                            module=p.module,
                            order=p.order,
                            width=p.width,
                            params=p.params,
                        )
                        for p in probes
                    ],
                }
            )

    def run_state(self, run_id: uuid.UUID) -> tuple[RunStatus, int | None]:
        """Status and last step of a run: the cheap part of a run, for live pages."""
        now = datetime.now(UTC)
        with self._sessions() as s:
            run, _ = self._get_run(s, run_id)
            return self._status(run, now), run.last_step

    def list_series(self, run_id: uuid.UUID) -> list[SeriesKey]:
        """The (indicator, probe) series of a run, probes in model order."""
        with self._sessions() as s:
            run, _ = self._get_run(s, run_id)
            agg = (
                select(
                    Point.series_id,
                    func.count(Point.id).label("n"),
                    func.max(Point.step).label("last_step"),
                )
                .join(Series, Series.id == Point.series_id)
                .where(Series.run_id == run.id)
                .group_by(Point.series_id)
                .subquery()
            )
            rows = s.execute(
                select(Series.indicator, Probe.name, agg.c.n, agg.c.last_step, Point.value)
                .join(Probe, Probe.id == Series.probe_id)
                .outerjoin(agg, agg.c.series_id == Series.id)
                .outerjoin(Point, (Point.series_id == Series.id) & (Point.step == agg.c.last_step))
                .where(Series.run_id == run.id)
                .order_by(Series.indicator, Probe.order, Probe.id)
            ).all()
        return [
            SeriesKey(indicator=i, probe=p, points=n or 0, last_step=ls, last_value=v)
            for i, p, n, ls, v in rows
        ]

    def get_points(
        self, run_id: uuid.UUID, indicator: str, probe: str, max_points: int = 2000
    ) -> SeriesPoints:
        """Points of one series in step order, min/max-downsampled to ``max_points``."""
        with self._sessions() as s:
            run, _ = self._get_run(s, run_id)
            series_id = s.scalar(
                select(Series.id)
                .join(Probe, Probe.id == Series.probe_id)
                .where(Series.run_id == run.id, Series.indicator == indicator, Probe.name == probe)
            )
            if series_id is None:
                raise errors.NotFound(
                    errors.SERIES_NOT_FOUND.format(indicator=indicator, probe=probe, run_id=run_id)
                )
            rows = s.execute(
                select(Point.step, Point.value)
                .where(Point.series_id == series_id)
                .order_by(Point.step)
            ).all()
        steps = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        values = np.fromiter(
            (np.nan if r[1] is None else r[1] for r in rows), dtype=np.float64, count=len(rows)
        )
        kept_steps, kept_values = minmax_downsample(steps, values, max_points)
        return SeriesPoints(
            indicator=indicator,
            probe=probe,
            steps=kept_steps.tolist(),
            values=[v if math.isfinite(v) else None for v in kept_values.tolist()],
            total=len(rows),
            downsampled=kept_steps.size < steps.size,
        )

    def points_since(
        self, run_id: uuid.UUID, cursor: int, limit: int = 5000
    ) -> tuple[list[PointEvent], int]:
        """Points of a run that arrived after ``cursor`` (a point id), and the new cursor."""
        with self._sessions() as s:
            rows = s.execute(
                select(Point.id, Series.indicator, Probe.name, Point.step, Point.value)
                .join(Series, Series.id == Point.series_id)
                .join(Probe, Probe.id == Series.probe_id)
                .where(Series.run_id == str(run_id), Point.id > cursor)
                .order_by(Point.id)
                .limit(limit)
            ).all()
        events = [PointEvent(indicator=i, probe=p, step=st, value=v) for _, i, p, st, v in rows]
        return events, (rows[-1][0] if rows else cursor)

    def latest_cursor(self) -> int:
        """The newest point id: a live page starts listening from here."""
        with self._sessions() as s:
            return s.scalar(select(func.max(Point.id))) or 0
