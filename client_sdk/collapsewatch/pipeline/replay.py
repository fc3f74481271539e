"""Upload spooled batches: the engine of ``collapsewatch sync DIR``."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import httpx

from collapsewatch.config import INGEST_PATH, server_url, token_value
from collapsewatch.pipeline.spool import batch_files
from collapsewatch.pipeline.wire import REJECTED, SENT, post

logger = logging.getLogger("collapsewatch")


def sync(
    directory: str | os.PathLike[str],
    server: str | None = None,
    token: str | None = None,
    http_client: httpx.Client | None = None,
) -> tuple[int, int]:
    """Re-POST the spooled batches under ``directory`` in order; return ``(sent, failed)``.

    ``directory`` is a run's spool directory or the spool root. Each file is deleted once the
    server accepts it (a batch it already has counts as accepted: batch ids are idempotent).
    A rejected file (4xx) is kept and counted as failed; if the server cannot be reached,
    the remaining files are kept and counted as failed without trying them.
    Server and token default to ``$COLLAPSEWATCH_SERVER`` and ``$COLLAPSEWATCH_TOKEN``.
    """
    root = Path(directory)
    files = batch_files(root)
    url = server_url(server) + INGEST_PATH
    key = token_value(token)
    client = http_client or httpx.Client(timeout=30.0)
    sent = failed = 0
    try:
        for index, path in enumerate(files):
            result = post(client, url, path.read_bytes(), key)
            if result.outcome == SENT:
                path.unlink(missing_ok=True)
                sent += 1
                continue
            logger.warning("collapsewatch: %s not uploaded (%s)", path, result.reason)
            if result.outcome == REJECTED:
                failed += 1
                continue
            failed += len(files) - index
            break
    finally:
        if http_client is None:
            client.close()
    for run_dir in {p.parent for p in files} - {root}:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only succeeds once empty; the directory given is kept
    return sent, failed
