"""The disk spool: batches the server could not take, kept as the exact gzipped request bodies.

Files are ``<root>/<run_id>/<seq>-<batch_id>.json.gz``. The sequence number keeps the sending
order; the batch id inside the body makes a replay idempotent (the server ignores a batch id
it has stored), so a file sent twice does no harm.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

SUFFIX = ".json.gz"


class Spool:
    """One run's spool directory; writes are atomic and at most once per batch id."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._next_seq: int | None = None
        self._written: set[str] = set()

    def write(self, batch_id: str, body: bytes) -> bool:
        """Store one batch; False if this batch id was already spooled. Raises ``OSError``."""
        with self._lock:
            if batch_id in self._written:
                return False
            if self._next_seq is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._next_seq = 1 + max((sequence(p) for p in self.pending()), default=-1)
            name = f"{self._next_seq:08d}-{batch_id}{SUFFIX}"
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(body)
            # rename is atomic: a crash never leaves a half-written batch for sync to send
            os.replace(tmp, self.directory / name)
            self._next_seq += 1
            self._written.add(batch_id)
            return True

    def pending(self) -> list[Path]:
        """Spooled batches of this run, oldest first."""
        return batch_files(self.directory)


def batch_files(directory: Path) -> list[Path]:
    """Every spooled batch under ``directory`` (a run's dir or the spool root), in order."""
    if not directory.is_dir():
        return []
    return sorted(directory.rglob(f"*{SUFFIX}"), key=lambda p: (p.parent, sequence(p), p.name))


def sequence(path: Path) -> int:
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def batch_id(path: Path) -> str:
    """The batch id in a spool file's name."""
    return path.name.split("-", 1)[-1].removesuffix(SUFFIX)
