"""What the sender tells the user: each kind of problem once, in words that say what to do.

Everything goes through the ``collapsewatch`` logger, once per kind of problem and monitor.
Without logging configured, Python prints WARNING records to stderr: one line per message
(a ``warnings.warn`` next to it printed every message twice).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from collapsewatch.pipeline.wire import Answer

logger = logging.getLogger("collapsewatch")

SYNC_HINT = "upload them later with `collapsewatch sync {where}`"


def refused_fix(answer: Answer, server: str, project: str) -> str:
    """What to change after a 401, 403, 404, 405 or a redirect."""
    if answer.status == 401:
        return (
            "the ingest token is missing or wrong: pass watch(token=...) or set "
            f"COLLAPSEWATCH_TOKEN to an ingest token of project {project!r}"
        )
    if answer.status == 403:
        return (
            f"the token does not give access to project {project!r} (revoked, or made for "
            "another project): use an ingest token of this project"
        )
    return (
        f"no collapsewatch ingest answers at {server}: check watch(server=...) or "
        "COLLAPSEWATCH_SERVER (the base URL, e.g. http://host:8420)"
    )


class Notices:
    """Logs each kind of message once; thread-safe."""

    def __init__(self) -> None:
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def once(self, key: str, message: str, level: int = logging.WARNING) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        logger.log(level, message)

    def unreachable(self, server: str, answer: Answer, spool: Path) -> None:
        self.once(
            "away",
            f"collapsewatch: server {server} unreachable ({answer.describe()}); statistics "
            f"are spooled to {spool} and sent when it is back; if the run ends first, "
            + SYNC_HINT.format(where=spool),
        )

    def refused(self, server: str, project: str, answer: Answer, spool: Path) -> None:
        fix = refused_fix(answer, server, project)
        self.once(
            "refused",
            f"collapsewatch: server {server} refused the statistics ({answer.describe()}): "
            f"{fix}. Nothing is lost: they are spooled to {spool}; once fixed, upload them "
            f"with `collapsewatch sync {spool}` (add --server and --token if they changed)",
        )

    def rejected(self, server: str, answer: Answer, spool: Path) -> None:
        self.once(
            "rejected",
            f"collapsewatch: server {server} rejected a batch ({answer.describe()}); it is set "
            f"aside in {spool / 'rejected'} with the server's answer, and later batches go on",
        )

    def throttled(self, server: str, seconds: float) -> None:
        self.once(
            "throttled",
            f"collapsewatch: server {server} is busy and asked for a pause of {seconds:g} s; "
            "statistics are spooled meanwhile and sent afterwards",
            logging.INFO,
        )

    def spilled(self, spool: Path) -> None:
        self.once(
            "spilled",
            "collapsewatch: training makes statistics faster than the server takes them; the "
            f"overflow is spooled to {spool} and sent as the server catches up",
            logging.INFO,
        )

    def disk(self, spool: Path, error: OSError) -> None:
        self.once(
            "disk",
            f"collapsewatch: cannot write the spool {spool} ({error}); what the server does "
            "not take is dropped and counted (monitor.stats['dropped'])",
        )


def account(counts: Mapping[str, int], reasons: Mapping[str, int], spool: Path) -> str | None:
    """The closing summary when some records are not on the server; None when all are."""
    stored, spooled = counts["stored"], counts["spooled"]
    rejected, dropped = counts["rejected"], counts["dropped"]
    if spooled == rejected == dropped == 0:
        return None
    parts = [f"{stored} stored"]
    if spooled:
        parts.append(f"{spooled} spooled to {spool} ({SYNC_HINT.format(where=spool)})")
    if rejected:
        parts.append(
            f"{rejected} set aside in {spool / 'rejected'} with the server's answers (fix the "
            f"cause, then `collapsewatch sync {spool / 'rejected'}`)"
        )
    if dropped:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()) if n)
        parts.append(f"{dropped} dropped ({why})")
    return f"collapsewatch: of {counts['accepted']} records, " + "; ".join(parts)
