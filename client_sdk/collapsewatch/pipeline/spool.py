"""The disk spool: batches the server has not taken, kept as the exact gzipped request bodies.

Files are ``<root>/<run_id>/<seq>-<batch_id>.json.gz``. The sequence number keeps the sending
order; the batch id inside the body makes a replay idempotent (the server ignores a batch id
it has stored), so a file sent twice does no harm.

A batch the server refuses for good is set aside in ``<run_id>/rejected/``, with the server's
answer beside it (``<seq>-<batch_id>.answer.json``); replays skip that folder, and
``collapsewatch sync <run_id>/rejected`` sends its batches again once the cause is fixed.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUFFIX = ".json.gz"
ANSWER_SUFFIX = ".answer.json"
REJECTED_DIR = "rejected"


class Spool:
    """One run's spool directory; writes are atomic and at most once per batch id."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._next_seq: int | None = None
        self._written: set[str] = set()

    @property
    def rejected(self) -> Path:
        """Where this run's refused batches are set aside."""
        return self.directory / REJECTED_DIR

    def write(self, batch_id: str, body: bytes) -> Path | None:
        """Store one batch and return its file; None if this batch id was spooled before.

        Raises ``OSError`` when the disk refuses.
        """
        with self._lock:
            if batch_id in self._written:
                return None
            if self._next_seq is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                known = [*self.pending(), *batch_files(self.rejected)]
                self._next_seq = 1 + max((sequence(p) for p in known), default=-1)
            name = f"{self._next_seq:08d}-{batch_id}{SUFFIX}"
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(body)
            # rename is atomic: a crash never leaves a half-written batch for sync to send
            os.replace(tmp, self.directory / name)
            self._next_seq += 1
            self._written.add(batch_id)
            return self.directory / name

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held)."""
        self._lock = threading.Lock()

    def pending(self) -> list[Path]:
        """Spooled batches of this run waiting to be sent, oldest first."""
        return batch_files(self.directory)

    def has_pending(self) -> bool:
        """Whether any batch waits, without listing them all."""
        if not self.directory.is_dir():
            return False
        return any(p.name.endswith(SUFFIX) for p in self.directory.iterdir())


def batch_files(directory: Path) -> list[Path]:
    """Every spooled batch under ``directory`` (a run's dir or the spool root), in order.

    Batches set aside in a ``rejected`` folder below ``directory`` are left out; name that
    folder itself to get them.
    """
    if not directory.is_dir():
        return []
    files = [
        p
        for p in directory.rglob(f"*{SUFFIX}")
        if REJECTED_DIR not in p.relative_to(directory).parts[:-1]
    ]
    return sorted(files, key=lambda p: (p.parent, sequence(p), p.name))


def set_aside(path: Path, answer: dict[str, Any]) -> Path:
    """Move a spooled batch into its run's ``rejected`` folder and write ``answer`` beside it.

    A batch already in a ``rejected`` folder stays there with its answer updated. Returns the
    batch's new path; raises ``OSError`` when the disk refuses.
    """
    folder = path.parent if path.parent.name == REJECTED_DIR else path.parent / REJECTED_DIR
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    note = folder / (path.name.removesuffix(SUFFIX) + ANSWER_SUFFIX)
    document = {"batch_id": batch_id(path), "set_aside_at": datetime.now(UTC).isoformat()}
    note.write_text(json.dumps({**document, **answer}, indent=2) + "\n")
    if target != path:
        os.replace(path, target)
    return target


def sequence(path: Path) -> int:
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def batch_id(path: Path) -> str:
    """The batch id in a spool file's name."""
    return path.name.split("-", 1)[-1].removesuffix(SUFFIX)
