"""What the load benchmarks share: real ``collapsewatch serve`` processes on a SQLite file or a
fresh Postgres database, and what the kernel says about their CPU time and memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from collapsewatch_demo.validation.processes import serve

#: An admin connection to a Postgres; benchmarks create (and drop) their own database on it.
PG_ADMIN_URL = os.environ.get(
    "COLLAPSEWATCH_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: Server environment without notification grouping: each alert is sent at once, so a
#: benchmark measures the pipeline, not the group wait and interval.
NO_NOTIFY_GROUPING = {
    "COLLAPSEWATCH_NOTIFY_GROUP_WAIT_S": "0",
    "COLLAPSEWATCH_NOTIFY_GROUP_INTERVAL_S": "0",
}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def start_server(
    db_url: str, log: Path, env: dict[str, str] | None = None, timeout: float = 120.0
) -> tuple[subprocess.Popen[bytes], str]:
    """One ``collapsewatch serve`` on a free loopback port, its output appended to ``log``
    (started as the validation suite starts its own); returns the process and its URL, or
    ends the benchmark with a pointer to the log when the server does not answer in time."""
    with open(log, "ab") as out:
        try:
            return serve(db_url, out=out, env=env, timeout=timeout)
        except RuntimeError as exc:
            sys.exit(f"{exc}; see {log}")


def timed_get(client: httpx.Client, url: str, repeat: int) -> tuple[float, int]:
    """Median wall time of ``repeat`` GETs of ``url`` (ms) and the size of its body (bytes)."""
    times, size = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        size = len(r.content)
    return statistics.median(times), size


def post_ingest(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> None:
    """POST one ingest batch, waiting as long as the server asks (429/503 with Retry-After:
    its processing queue is deep), as the SDK does; raises on any other error."""
    while True:
        r = client.post(f"{url}/api/v1/ingest", content=body, headers=headers)
        if r.status_code in (429, 503) and "retry-after" in r.headers:
            time.sleep(min(float(r.headers["retry-after"]), 5.0))
            continue
        r.raise_for_status()
        return


def wait_processed(client: httpx.Client, url: str, run_id: str, quiet_s: float = 3.0) -> int:
    """Wait until the run's stored points stop growing for ``quiet_s`` (the batches accepted
    are processed after their answer); returns the count."""
    last, since = -1, time.monotonic()
    while True:
        listed = client.get(f"{url}/api/v1/runs/{run_id}/series").json()
        total = sum(s["points"] for s in listed)
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return total
        time.sleep(0.5)


@contextmanager
def servers(
    db_url: str, count: int, log_dir: Path, env: dict[str, str] | None = None
) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """``count`` server processes on one database, started one after the other (the first
    migrates the schema), stopped at the end."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for i in range(count):
            started.append(start_server(db_url, log_dir / f"server-{i}.log", env))
        yield started
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty Postgres database for one benchmark, dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"cw_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh database URL: ``sqlite`` (a file in ``tmp``) or ``postgres``."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:6]}.db"
    else:
        with fresh_pg_database() as url:
            yield url


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * _PAGE / 2**20


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 200 values is the 198th)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def machine_load() -> str:
    """The load average, to print beside the numbers (the cores are shared)."""
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
