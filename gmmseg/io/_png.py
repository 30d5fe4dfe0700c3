"""PNG encoding: rows filtered by NumPy, deflated stripe by stripe, streamed to a file.

Encoding a photo-sized PNG is almost all deflate: OpenCV's encoder (libpng,
zlib level 1, run-length strategy, the Sub filter) spends about half a
second on a 4096 x 4096 overlay, and a ``save`` writes two of them.  This
module writes the same PNG (8- or 16-bit grey, grey + alpha, RGB or RGBA,
every row Sub-filtered) and deflates with ISA-L (`isal`, in the ``fast``
extra) where it is installed: about 4x faster, files a few per cent larger.
Without it, Python's zlib at OpenCV's settings gives OpenCV's files in about
OpenCV's time (``python scripts/bench_save_parts.py`` times all three).  Both let go of
the GIL while they deflate, so several encodes share the cores.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np

try:  # the fast extra
    from isal import isal_zlib as _deflate

    # ISA-L's levels are 0-3; 1 is its fast level (2 and 3 gain ~1 % here).
    _LEVEL, _STRATEGY = 1, _deflate.Z_DEFAULT_STRATEGY
except ImportError:
    _deflate = zlib
    # OpenCV's defaults: the fastest level, run-length matches only.
    _LEVEL, _STRATEGY = 1, zlib.Z_RLE

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type by number of channels: grey, grey + alpha, RGB, RGBA.
_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
# Filtered bytes per stripe: the stripe stays in the cache between the
# filter and deflate.
_STRIPE_BYTES = 1 << 20
# Compressed bytes gathered before they are written as one IDAT chunk.
_CHUNK_BYTES = 1 << 18
_SUB = 1    # PNG filter type: each byte minus the one a pixel to its left


def deflate_name() -> str:
    """Which deflate the encoder uses: ``"isal"`` or ``"zlib"`` (benchmarks print it)."""
    return "zlib" if _deflate is zlib else "isal"


def encode_png(pixels: np.ndarray, write: Callable[[bytes], object]) -> None:
    """Write ``pixels`` as a PNG through ``write`` (e.g. a file's ``write``).

    Parameters
    ----------
    pixels : (H, W) or (H, W, C) ndarray of uint8 or uint16, C in 1..4
        Grey, grey + alpha, RGB or RGBA (channels in that order), H, W >= 1.
        Not modified; any memory layout.
    write : callable
        Called with the file's bytes, in order.
    """
    height, width = pixels.shape[:2]
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    depth = 8 * pixels.dtype.itemsize
    write(_SIGNATURE)
    _chunk(write, b"IHDR", struct.pack(">IIBBBBB", width, height, depth,
                                       _COLOUR_TYPE[channels], 0, 0, 0))
    pixel_bytes = channels * pixels.dtype.itemsize
    row_bytes = width * pixel_bytes
    rows = pixels.reshape(height, width * channels)
    step = max(1, _STRIPE_BYTES // (row_bytes + 1))
    filtered = np.empty((min(step, height), row_bytes + 1), np.uint8)
    filtered[:, 0] = _SUB
    compressor = _deflate.compressobj(_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS, 8, _STRATEGY)
    pending = []
    for start in range(0, height, step):
        # PNG stores 16-bit samples big-endian.
        raw = np.ascontiguousarray(rows[start:start + step], dtype=pixels.dtype.newbyteorder(">"))
        raw = raw.view(np.uint8).reshape(len(raw), row_bytes)
        out = filtered[:len(raw)]
        out[:, 1:pixel_bytes + 1] = raw[:, :pixel_bytes]
        np.subtract(raw[:, pixel_bytes:], raw[:, :-pixel_bytes], out=out[:, pixel_bytes + 1:])
        pending.append(compressor.compress(out))
        if sum(map(len, pending)) >= _CHUNK_BYTES:
            _chunk(write, b"IDAT", b"".join(pending))
            pending = []
    pending.append(compressor.flush())
    _chunk(write, b"IDAT", b"".join(pending))
    _chunk(write, b"IEND", b"")


def _chunk(write, kind, data):
    """One PNG chunk: length, type, data, CRC of type and data."""
    write(struct.pack(">I", len(data)))
    write(kind)
    write(data)
    write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))
