"""The C allocator of a server process: two malloc arenas instead of glibc's eight per core.

glibc gives a thread that allocates its own arena, up to eight per core; the server's threads
(the request pool, the processor, the deliverer) each fragment one, and what they free is
seldom returned to the system. Under 32 trainers for 15 minutes (``bench/trainers.py``) the
resident size grew about 1.2 MiB a minute after warm-up with the default, 0.6 with two arenas,
and stayed some 30 MiB lower; requests were as fast. ``MALLOC_ARENA_MAX`` in the environment
is the user's choice and is left alone; without glibc (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: ``mallopt``'s parameter for the arena limit (glibc's ``malloc.h``).
M_ARENA_MAX = -8
ARENAS = 2


def cap_arenas(count: int = ARENAS) -> bool:
    """Limit this process to ``count`` malloc arenas from now on (call it before threads
    start); False when the environment sets the limit or the C library cannot."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_ARENA_MAX, count))
