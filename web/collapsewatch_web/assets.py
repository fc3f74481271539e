"""Where the static files live: this package's ``static/`` and the installed plotly's bundle.

Plotly.js is served from the plotly Python package the server runs with, never from a CDN:
dashboards are often opened on offline clusters, and the bundle always matches the figures'
schema version.
"""

from __future__ import annotations

import functools
import gzip
import re
import threading
from importlib import metadata, resources
from pathlib import Path

STATIC_DIR = Path(str(resources.files("collapsewatch_web") / "static"))
PLOTLY_JS = "plotly.min.js"

# static/ is flat: a plain file name, so no path can climb out of the directory
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def plotly_js_path() -> Path:
    """The ``plotly.min.js`` shipped inside the installed plotly package."""
    return Path(str(resources.files("plotly") / "package_data" / PLOTLY_JS))


_GZIP_ONCE = threading.Lock()


def plotly_js_gzip() -> bytes:
    """The bundle gzipped, once per process (about 1 s of CPU for 4.8 MB -> 1.5 MB): compressed
    per request it held every cold page load up by that second. A request arriving while the
    server's start-up thread compresses waits for it rather than compressing again."""
    with _GZIP_ONCE:
        return _gzipped()


@functools.cache
def _gzipped() -> bytes:
    return gzip.compress(plotly_js_path().read_bytes(), compresslevel=9)


def plotly_version() -> str:
    """The installed plotly's version: part of the bundle's URL so caches refresh on upgrade."""
    return metadata.version("plotly")


def static_file(name: str) -> Path | None:
    """The file ``name`` of ``static/``, or None when there is no such (safe) name."""
    if not _SAFE_NAME.match(name):
        return None
    path = STATIC_DIR / name
    return path if path.is_file() else None
