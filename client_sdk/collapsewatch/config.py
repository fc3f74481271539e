"""Where the SDK's settings come from: an argument, else the environment, else a default.

Resolved once, in ``watch()``, so nothing reads the environment on the training path.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import TypeAdapter, ValidationError

from collapsewatch.schemas import MAX_TAGS, Name, Tag

if TYPE_CHECKING:
    import uuid

    import httpx
    from torch import nn

    from collapsewatch.schemas import RunAlert

DEFAULT_SERVER = "http://127.0.0.1:8420"
DEFAULT_PROJECT = "default"
INGEST_PATH = "/api/v1/ingest"

ENV_SERVER = "COLLAPSEWATCH_SERVER"
ENV_TOKEN = "COLLAPSEWATCH_TOKEN"
ENV_PROJECT = "COLLAPSEWATCH_PROJECT"
ENV_RUN = "COLLAPSEWATCH_RUN"
ENV_DISABLED = "COLLAPSEWATCH_DISABLED"
ENV_SPOOL_DIR = "COLLAPSEWATCH_SPOOL_DIR"

_NAME = TypeAdapter(Name)
_TAG = TypeAdapter(Tag)
_FALSE = {"", "0", "false", "no", "off"}


class WatchOptions(TypedDict, total=False):
    """The keyword options of :func:`collapsewatch.watch`, which documents each of them."""

    project: str | None
    run: str | None
    server: str | None
    token: str | None
    every: int | None
    config: dict[str, Any] | None
    tags: Sequence[str] | None
    http_client: httpx.Client | None
    spool_dir: str | os.PathLike[str] | None
    enabled: bool
    classifier: nn.Module | None
    blocks: Iterable[nn.Module] | None
    # issue 12: where researchers already train
    ranks: Literal["zero", "merge"]
    run_id: str | uuid.UUID | None
    resume: bool
    start_step: int | None
    on_alert: Callable[[RunAlert], object] | None
    mirror: Any


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one monitor."""

    server: str
    token: str | None
    project: str
    run_name: str
    spool_root: Path


def _pick(value: str | None, env: str) -> str | None:
    if value is not None:
        return value
    return os.environ.get(env) or None


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a valid project or run name, else raise ``ValueError``.

    Raised in ``watch()``, before training starts, so a typo fails fast instead of every batch
    being rejected by the server later.
    """
    try:
        return str(_NAME.validate_python(value))
    except ValidationError:
        raise ValueError(
            f"collapsewatch: invalid {what} name {value!r}: use letters, digits, '_', '.', '-', "
            "starting with a letter or digit, at most 128 characters"
        ) from None


def check_tags(tags: Sequence[str] | None) -> list[str]:
    """The run's tags, de-duplicated in the order given; ``ValueError`` naming the first bad
    one (raised in ``watch()``, before training starts)."""
    if tags is None:
        return []
    if isinstance(tags, str):
        raise ValueError(f"collapsewatch: tags must be a list of strings, not the string {tags!r}")
    out: list[str] = []
    for tag in tags:
        try:
            checked = str(_TAG.validate_python(tag))
        except ValidationError:
            raise ValueError(
                f"collapsewatch: invalid tag {tag!r}: use letters, digits, '_', '.', ':', '-', "
                "starting with a letter or digit, at most 64 characters"
            ) from None
        if checked not in out:
            out.append(checked)
    if len(out) > MAX_TAGS:
        raise ValueError(f"collapsewatch: {len(out)} tags; a run has at most {MAX_TAGS}")
    return out


def server_url(server: str | None) -> str:
    """The server base URL without a trailing slash."""
    return (_pick(server, ENV_SERVER) or DEFAULT_SERVER).rstrip("/")


def token_value(token: str | None) -> str | None:
    return _pick(token, ENV_TOKEN)


def default_spool_root() -> Path:
    """``$COLLAPSEWATCH_SPOOL_DIR``, else ``~/.cache/collapsewatch/spool`` (XDG cache dir)."""
    env = os.environ.get(ENV_SPOOL_DIR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "collapsewatch" / "spool"


def resolve(
    *,
    project: str | None,
    run: str | None,
    server: str | None,
    token: str | None,
    spool_dir: str | os.PathLike[str] | None,
) -> Settings:
    """Resolve every setting; raises ``ValueError`` on an invalid project or run name."""
    run_name = _pick(run, ENV_RUN) or time.strftime("run-%Y%m%d-%H%M%S")
    return Settings(
        server=server_url(server),
        token=token_value(token),
        project=check_name(_pick(project, ENV_PROJECT) or DEFAULT_PROJECT, "project"),
        run_name=check_name(run_name, "run"),
        spool_root=Path(spool_dir).expanduser() if spool_dir is not None else default_spool_root(),
    )


def disabled_by_env() -> bool:
    return os.environ.get(ENV_DISABLED, "").strip().lower() not in _FALSE


def is_nonzero_rank() -> bool:
    """True on a data-parallel worker other than rank 0 (Lightning's rank-zero convention).

    The launcher's environment is checked first because ``watch()`` often runs before
    ``init_process_group``; torch.distributed is only consulted if torch is already imported.
    """
    for env in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(env)
        if value is not None and value.strip().isdigit():
            return int(value) != 0
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of a user's config: unknown objects become their ``str``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth > 20:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    return str(value)
