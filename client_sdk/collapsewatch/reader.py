"""``collapsewatch.Api``: read what a server holds (projects, runs, series, points, alerts)
from Python, as lists of dicts or, when asked and pandas is installed, DataFrames.

Points come unreduced from the run's export (``GET /api/v1/runs/{id}/export``), so they are
every stored value, not the dashboard's downsampled view.
"""

from __future__ import annotations

import csv
import io
import math
import os
import uuid
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import httpx

from collapsewatch.config import ENV_TOKEN, server_url

if TYPE_CHECKING:
    import pandas

#: Reads need the server's admin token once it has one; an ingest token is tried otherwise.
ENV_ADMIN_TOKEN = "COLLAPSEWATCH_ADMIN_TOKEN"
NEEDS_PANDAS = "collapsewatch.Api: frame=True needs pandas: pip install pandas"


class ApiError(RuntimeError):
    """The server refused a read or could not be reached; the message says what it said."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def _frame(rows: list[dict[str, Any]]) -> pandas.DataFrame:
    try:
        import pandas
    except ImportError:
        raise ImportError(NEEDS_PANDAS) from None
    return pandas.DataFrame(rows)


def _value(text: str) -> float | None:
    """A CSV value of the export: empty for a non-finite value."""
    return float(text) if text else None


class Api(AbstractContextManager["Api"]):
    """A read client of a collapsewatch server.

    ``server`` defaults to ``COLLAPSEWATCH_SERVER`` (else the local server), ``token`` to
    ``COLLAPSEWATCH_ADMIN_TOKEN``, else ``COLLAPSEWATCH_TOKEN``. ``http_client`` replaces the
    HTTP client (its base URL is used as it is). Each list method takes ``frame=True`` to get
    a pandas DataFrame instead (pandas is never required otherwise)::

        api = collapsewatch.Api()
        run = api.runs("demo")[0]
        dead = api.points(run["run_id"], "dead_fraction", frame=True)
    """

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.server = server_url(server)
        token = token or os.environ.get(ENV_ADMIN_TOKEN) or os.environ.get(ENV_TOKEN) or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own = http_client is None
        self._http = http_client or httpx.Client(base_url=self.server, timeout=timeout)
        self._headers = headers

    # -------------------------------------------------------------------------- plumbing

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __exit__(self, *_: object) -> None:
        # __enter__ (returning the client) comes from AbstractContextManager
        self.close()

    def _get(self, path: str, **params: Any) -> httpx.Response:
        query = {k: v for k, v in params.items() if v is not None}
        try:
            response = self._http.get(path, params=query, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {self.server}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(
                f"GET {path}: {detail} (HTTP {response.status_code})", response.status_code
            )
        return response

    def _rows(self, path: str, frame: bool, **params: Any) -> Any:
        rows: list[dict[str, Any]] = self._get(path, **params).json()
        return _frame(rows) if frame else rows

    # ----------------------------------------------------------------------------- reads

    def projects(self, *, frame: bool = False) -> Any:
        """Projects with their number of runs: ``[{"name", "runs", ...}]``."""
        return self._rows("/api/v1/projects", frame)

    def runs(self, project: str | None = None, *, limit: int = 5000, frame: bool = False) -> Any:
        """Runs newest first (of one project when given): ``[{"run_id", "name", "status",
        "last_step", "open_alerts", ...}]``."""
        return self._rows("/api/v1/runs", frame, project=project, limit=limit)

    def series(self, run_id: str | uuid.UUID, *, frame: bool = False) -> Any:
        """The (indicator, probe) series of a run with their size and newest point."""
        return self._rows(f"/api/v1/runs/{run_id}/series", frame)

    def points(
        self,
        run_id: str | uuid.UUID,
        indicator: str,
        probe: str | None = None,
        *,
        frame: bool = False,
    ) -> Any:
        """Every stored point of one indicator of a run (of one probe when given), in
        ``probe, indicator, step, value`` rows, probes in model order then step order. A
        non-finite value is None (NaN in a DataFrame)."""
        text = self._get(
            f"/api/v1/runs/{run_id}/export", format="csv", indicator=indicator, probe=probe
        ).text
        rows: list[dict[str, Any]] = [
            {
                "probe": row["probe"],
                "indicator": row["indicator"],
                "step": int(row["step"]),
                "value": _value(row["value"]),
            }
            for row in csv.DictReader(io.StringIO(text))
        ]
        if not frame:
            return rows
        table = _frame(rows)
        if not rows:
            return table.reindex(columns=["probe", "indicator", "step", "value"])
        table["value"] = table["value"].astype(float).fillna(math.nan)
        return table

    def alerts(self, run_id: str | uuid.UUID, *, limit: int = 5000, frame: bool = False) -> Any:
        """Alert events of a run, newest first: ``[{"status", "severity", "rule_name",
        "probe", "indicator", "step", "value", ...}]``."""
        return self._rows("/api/v1/alerts", frame, run_id=str(run_id), limit=limit)
