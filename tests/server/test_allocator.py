"""The server's malloc arenas: capped at two, unless the environment says otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# Eight threads malloc at once and hold their blocks; glibc's malloc_info then lists one
# <heap> per arena in use.
_COUNT_ARENAS = """
import ctypes, sys, threading
from collapsewatch_server import allocator
capped = allocator.cap_arenas() if sys.argv[1] == "cap" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
held = threading.Barrier(9)
done = threading.Event()
def work():
    blocks = [libc.malloc(4096) for _ in range(64)]
    held.wait()
    done.wait()
    for b in blocks:
        libc.free(b)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
held.wait()
out = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, out)
libc.fclose(out)
done.set()
for t in threads:
    t.join()
print(capped)
"""


def arenas(tmp_path: Path, mode: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
    """Whether ``cap_arenas`` capped a fresh interpreter, and the arenas its threads used."""
    info = tmp_path / f"{mode}.xml"
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | (env or {})
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS, mode, str(info)],
        capture_output=True,
        text=True,
        env=clean,
        check=True,
        timeout=60,
    ).stdout
    return out.strip() == "True", info.read_text().count("<heap nr=")


def test_the_server_uses_two_arenas_where_threads_would_take_more(tmp_path: Path) -> None:
    capped, used = arenas(tmp_path, "default")
    assert not capped and used > 2, "glibc's default: an arena per thread, up to 8 per core"
    assert arenas(tmp_path, "cap") == (True, 2)


def test_malloc_arena_max_in_the_environment_wins(tmp_path: Path) -> None:
    capped, used = arenas(tmp_path, "cap", env={"MALLOC_ARENA_MAX": "4"})
    assert not capped
    assert used == 4
