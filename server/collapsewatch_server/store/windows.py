"""Recent statistics of probes, for windowed indicators (dead units over several batches)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sqlalchemy import select, union_all

from collapsewatch_server.codec import Stats, decode_stats
from collapsewatch_server.models import Probe, StatRecordRow
from collapsewatch_server.store.base import StoreBase

#: Probes per query: SQLite allows at most 500 terms in a compound SELECT.
_PROBES_PER_QUERY = 400


class WindowStore(StoreBase):
    """Reads the statistics that windowed indicators sum over."""

    def recent_stats(
        self, run_id: uuid.UUID, before: Mapping[str, int], count: int
    ) -> dict[str, list[tuple[int, Stats]]]:
        """For each probe name in ``before``, its last ``count`` records with a step below
        ``before[name]``, oldest first, as ``(step, statistics)``.

        One query (per 400 probes): a UNION ALL of one ``ORDER BY step DESC LIMIT count``
        per probe, each an index range scan on (probe_id, step), so the cost does not grow with
        the run's length. Unknown probes (a run's first batch) have no records.
        """
        if count <= 0 or not before:
            return {}
        out: dict[str, list[tuple[int, Stats]]] = {}
        names = sorted(before)
        with self._sessions() as s:
            ids = dict(
                s.execute(
                    select(Probe.name, Probe.id).where(
                        Probe.run_id == str(run_id), Probe.name.in_(names)
                    )
                ).all()
            )
            known = [n for n in names if n in ids]
            for start in range(0, len(known), _PROBES_PER_QUERY):
                parts = [
                    select(StatRecordRow.probe_id, StatRecordRow.step, StatRecordRow.stats)
                    .where(StatRecordRow.probe_id == ids[n], StatRecordRow.step < before[n])
                    .order_by(StatRecordRow.step.desc())
                    .limit(count)
                    .subquery()
                    .select()
                    for n in known[start : start + _PROBES_PER_QUERY]
                ]
                query = parts[0] if len(parts) == 1 else union_all(*parts)
                names_by_id = {pid: name for name, pid in ids.items()}
                for probe_id, step, blob in s.execute(query).all():
                    out.setdefault(names_by_id[probe_id], []).append((step, decode_stats(blob)))
        for records in out.values():
            records.sort(key=lambda r: r[0])
        return out
