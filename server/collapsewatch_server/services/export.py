"""Every series of a run in long format (probe, indicator, step, value), as CSV or Parquet:
the data leaves the server in files any tool reads.

Series are read one at a time, so an export of a long run never holds more than one series
in memory (CSV streams; Parquet writes one row group per series).
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from collections.abc import Iterator
from typing import Literal

from collapsewatch_server import errors
from collapsewatch_server.repositories import points, runs
from collapsewatch_server.services.context import ServiceContext

ExportFormat = Literal["csv", "parquet"]
#: The columns of an export, in order.
COLUMNS = ("probe", "indicator", "step", "value")
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}


def _series_ids(
    ctx: ServiceContext, run_id: uuid.UUID, indicator: str | None, probe: str | None
) -> list[tuple[int, str, str]]:
    """(series id, probe, indicator) of a run, indicator then model order, narrowed to one
    indicator and/or probe when given (NotFound when the run is unknown or nothing is left)."""
    with ctx.db.read() as s:
        run, _ = runs.get(s, run_id)
        found = [
            (sid, p, i)
            for sid, p, i in points.series_ids(s, run.id)
            if (indicator is None or i == indicator) and (probe is None or p == probe)
        ]
    if not found and (indicator is not None or probe is not None):
        raise errors.NotFound(
            errors.SERIES_NOT_FOUND.format(indicator=indicator, probe=probe, run_id=run_id)
        )
    return found


def _points(ctx: ServiceContext, series_id: int) -> list[tuple[int, float | None]]:
    """(step, value) of one series in step order, None for a non-finite value."""
    with ctx.db.read() as s:
        steps, values = points.of_series(s, series_id)
    return [
        (st, v if math.isfinite(v) else None)
        for st, v in zip(steps.tolist(), values.tolist(), strict=True)
    ]


def csv_value(value: float | None) -> str:
    """A value as CSV text: empty for a non-finite value (NaN, inf), full precision else."""
    return "" if value is None or not math.isfinite(value) else repr(value)


def csv_lines(
    probe: str, indicator: str, rows: list[tuple[int, float | None]], header: bool = True
) -> str:
    """One series as CSV text (with the header line when ``header``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows((probe, indicator, step, csv_value(value)) for step, value in rows)
    return out.getvalue()


def run_csv(
    ctx: ServiceContext,
    run_id: uuid.UUID,
    indicator: str | None = None,
    probe: str | None = None,
) -> Iterator[str]:
    """The run's CSV (of one indicator and/or probe when given), series by series. The run
    is checked before the first chunk, so an unknown run is a 404 and not an empty file."""
    series = _series_ids(ctx, run_id, indicator, probe)

    def chunks() -> Iterator[str]:
        yield ",".join(COLUMNS) + "\n"
        for sid, probe, indicator in series:
            yield csv_lines(probe, indicator, _points(ctx, sid), header=False)

    return chunks()


def run_parquet(
    ctx: ServiceContext,
    run_id: uuid.UUID,
    indicator: str | None = None,
    probe: str | None = None,
) -> bytes:
    """The run's Parquet file, like :func:`run_csv` (a non-finite value is null). Needs
    pyarrow, an optional dependency: without it,
    :class:`~collapsewatch_server.errors.NotImplementedHere`."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise errors.NotImplementedHere(errors.PARQUET_NEEDS_PYARROW) from None
    series = _series_ids(ctx, run_id, indicator, probe)
    schema = pa.schema(
        [
            ("probe", pa.string()),
            ("indicator", pa.string()),
            ("step", pa.int64()),
            ("value", pa.float64()),
        ]
    )
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, schema) as writer:
        for sid, probe, indicator in series:
            rows = _points(ctx, sid)
            values = [v if v is not None and math.isfinite(v) else None for _, v in rows]
            writer.write_table(
                pa.table(
                    {
                        "probe": [probe] * len(rows),
                        "indicator": [indicator] * len(rows),
                        "step": [step for step, _ in rows],
                        "value": values,
                    },
                    schema=schema,
                )
            )
    return sink.getvalue()
