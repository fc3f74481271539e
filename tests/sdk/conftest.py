"""Fixtures of the SDK tests: an isolated environment and a fake ingest endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.sdk.helpers import Ingest


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No COLLAPSEWATCH_* setting leaks in, and nothing is spooled outside tmp_path."""
    for name in (
        "COLLAPSEWATCH_SERVER",
        "COLLAPSEWATCH_TOKEN",
        "COLLAPSEWATCH_PROJECT",
        "COLLAPSEWATCH_RUN",
        "COLLAPSEWATCH_DISABLED",
        "RANK",
        "SLURM_PROCID",
        "JSM_NAMESPACE_RANK",
    ):
        monkeypatch.delenv(name, raising=False)
    spool = tmp_path / "spool"
    monkeypatch.setenv("COLLAPSEWATCH_SPOOL_DIR", str(spool))
    return spool


@pytest.fixture(autouse=True)
def _few_threads() -> Iterator[None]:
    # the machine is shared: tiny models gain nothing from intra-op threads
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def ingest() -> Ingest:
    return Ingest()
