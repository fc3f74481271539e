"""Compact storage of a record's statistics: scalars in a JSON header, vectors as float32.

About 4x smaller than the JSON the SDK sends, and decoding gives numpy arrays directly.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping

import numpy as np

_MAGIC = b"CWS1"

Stats = dict[str, float | np.ndarray]


def encode_stats(stats: Mapping[str, float | list[float] | np.ndarray]) -> bytes:
    """Encode scalars and flat vectors; NaN and inf survive."""
    header: dict[str, object] = {}
    chunks: list[bytes] = []
    offset = 0
    for key, value in stats.items():
        if isinstance(value, (int, float)):
            header[key] = float(value)
            continue
        arr = np.asarray(value, dtype="<f4").ravel()
        header[key] = [offset, int(arr.size)]
        chunks.append(arr.tobytes())
        offset += arr.size
    head = json.dumps(header, allow_nan=True).encode()
    raw = _MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks)
    return zlib.compress(raw, 1)


def decode_stats(blob: bytes) -> Stats:
    """Inverse of :func:`encode_stats`: floats and float64 numpy vectors."""
    raw = zlib.decompress(blob)
    if raw[:4] != _MAGIC:
        raise ValueError("not an encoded statistics blob")
    (head_len,) = struct.unpack("<I", raw[4:8])
    header = json.loads(raw[8 : 8 + head_len])
    body = np.frombuffer(raw, dtype="<f4", offset=8 + head_len)
    out: Stats = {}
    for key, spec in header.items():
        if isinstance(spec, list):
            start, size = spec
            out[key] = body[start : start + size].astype(np.float64)
        else:
            out[key] = float(spec)
    return out


def as_arrays(stats: Mapping[str, float | list[float]]) -> Stats:
    """Wire statistics (lists) to the form indicators take (float64 vectors)."""
    return {
        k: float(v) if isinstance(v, (int, float)) else np.asarray(v, dtype=np.float64)
        for k, v in stats.items()
    }
