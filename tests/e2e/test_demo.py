"""`collapsewatch demo` as `make run` uses it: its own server on SQLite (scenarios with a given
server are tested in test_scenarios.py)."""

from __future__ import annotations

import subprocess
import sys


def test_demo_starts_its_own_server_on_sqlite(tmp_path: object) -> None:
    """What `make run` does, minus waiting for Ctrl-C (--exit)."""
    from collapsewatch_server.config import Settings
    from collapsewatch_server.db import Database, make_engine
    from collapsewatch_server.services import runs as run_reads
    from collapsewatch_server.services.context import ServiceContext
    from tests.helpers import free_port

    db_url = f"sqlite:///{tmp_path}/demo.db"
    port = free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "collapsewatch_server.cli",
            "demo",
            "--exit",
            "--port",
            str(port),
            "--db",
            db_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"dashboard at http://127.0.0.1:{port}/" in out.stdout
    engine = make_engine(db_url)
    runs = run_reads.list_runs(ServiceContext(Database(engine), Settings(db_url=db_url)), "demo")
    engine.dispose()
    assert sorted((r.name, r.status.value, r.last_step) for r in runs) == [
        ("relu-lr0.001", "finished", 299),
        ("relu-lr0.1", "finished", 299),
    ]
