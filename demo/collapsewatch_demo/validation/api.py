"""The read side of a collapsewatch server's public HTTP API, as the validation suite needs it:
the indicator catalogue, a project's rules, a run's alert events, series and points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Alarm:
    """One firing alert event: which indicator on which probe, at which step."""

    indicator: str
    probe: str
    severity: str
    step: int | None
    family: str

    def __str__(self) -> str:
        return f"{self.indicator}@{self.probe}:{self.step}"


class Server:
    """The read side of a server's public API, as the judge needs it."""

    def __init__(self, url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)
        catalogue = self._get("/api/v1/indicators")
        self.families: dict[str, str] = {str(i["name"]): str(i["family"]) for i in catalogue}
        #: records an indicator sums over (1: none)
        self.windows: dict[str, int] = {
            str(i["name"]): int(str(i.get("window") or 1)) for i in catalogue
        }

    def _get(self, path: str, **params: str | int) -> Any:
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def rules(self, project: str) -> list[dict[str, Any]]:
        return list(self._get(f"/api/v1/projects/{project}/rules"))

    def points(self, run_id: str, indicator: str, probe: str) -> list[tuple[int, float | None]]:
        """Every point of one series, in step order (None for NaN)."""
        r = self._get(f"/api/v1/runs/{run_id}/series/{indicator}", probe=probe, max_points=100_000)
        return list(zip(r["steps"], r["values"], strict=True))

    def alarms(self, run_id: str) -> list[Alarm]:
        """The run's firing, non-reminder events, earliest step first."""
        events = self._get("/api/v1/alerts", run_id=run_id, state="firing", limit=5000)
        out = [
            Alarm(
                indicator=str(e["indicator"]),
                probe=str(e["probe"]),
                severity=str(e["severity"]),
                step=e["step"] if isinstance(e["step"], int) else None,
                family=self.families.get(str(e["indicator"]), "?"),
            )
            for e in events
            if not e.get("reminder") and e.get("indicator")
        ]
        return sorted(out, key=lambda a: (a.step is None, a.step or 0))

    def sampled(self, run_id: str, indicator: str, fallback: bool = True) -> dict[str, int]:
        """Points per probe of ``indicator``'s series (the sampled steps of each layer); every
        probe's largest series when the run has no series of that indicator and
        ``fallback``."""
        series = self._get(f"/api/v1/runs/{run_id}/series")
        chosen = [s for s in series if s["indicator"] == indicator] or (series if fallback else [])
        points: dict[str, int] = {}
        for s in chosen:
            probe, n = str(s["probe"]), int(str(s["points"]))
            points[probe] = max(points.get(probe, 0), n)
        return points

    def close(self) -> None:
        self.http.close()
