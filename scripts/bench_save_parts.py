"""The choices inside ``save``'s PNGs and regions, measured side by side.

Three tables, each on this machine in one process (medians of the repeats):

1. PNG encoding of a save's overlay of a 4096 x 4096 photo
   (``sample_images/astronaut.png`` upscaled, segmented with defaults):
   OpenCV's encoder (``cv2.imencode``, its defaults), gmmseg's encoder
   (``gmmseg/io/_png.py``) with Python's zlib at OpenCV's settings, and with
   ISA-L (``isal``, the ``fast`` extra) where it is installed: seconds and
   file size.
2. The small-region clean-up (``remove_small_regions``, min_size 20,
   connectivity 2) of 2048 x 2048 maps of 8 labels in square blocks of 1 to
   8 pixels, the regions held as runs and as pixels
   (``gmmseg.postprocess._graph._SHORTEST_MEAN_RUN`` forced either way): the
   mean run length decides which form ``_connected`` picks.  Both forms must
   give the same map (checked).
3. The squared gradient of the regions' edge strength
   (``gmmseg.postprocess.regions._squared_gradient``) on the photo's Lab map,
   one OpenCV thread (as it runs beside the main thread in a save), for
   several stripe sizes (``_GRADIENT_STRIPE_VALUES``) and one stripe.

Usage::

    python scripts/bench_save_parts.py [--repeats N]

Needs the compiled kernels (Numba, the ``fast`` extra) for table 2.  Hold the
machine-wide lock when figures are meant to be compared
(``flock /tmp/gmmseg-cpu.lock``).
"""

import argparse
import statistics
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

import gmmseg
from gmmseg._system import machine_lines
from gmmseg.io import _png
from gmmseg.postprocess import _graph, regions, remove_small_regions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segment import photo  # noqa: E402


def timed(fn, repeats):
    """Median seconds of ``fn()`` and its last result."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def encoded(pixels, deflate, level, strategy):
    """``pixels`` as gmmseg's encoder writes them with this deflate."""
    saved = _png._deflate, _png._LEVEL, _png._STRATEGY
    _png._deflate, _png._LEVEL, _png._STRATEGY = deflate, level, strategy
    try:
        parts = []
        _png.encode_png(pixels, parts.append)
        return b"".join(parts)
    finally:
        _png._deflate, _png._LEVEL, _png._STRATEGY = saved


def png_table(overlay, repeats):
    print("\n1. PNG of a 4096 x 4096 overlay (RGB)")
    rows = [("OpenCV cv2.imencode (defaults)",
             lambda: cv2.imencode(".png", overlay[..., ::-1])[1].tobytes()),
            ("gmmseg encoder, zlib level 1 Z_RLE",
             lambda: encoded(overlay, zlib, 1, zlib.Z_RLE))]
    try:
        from isal import isal_zlib

        rows.append(("gmmseg encoder, ISA-L level 1",
                     lambda: encoded(overlay, isal_zlib, 1, isal_zlib.Z_DEFAULT_STRATEGY)))
    except ImportError:
        print("  (isal not installed: no ISA-L row)")
    for name, fn in rows:
        seconds, data = timed(fn, repeats)
        print(f"  {name:<36}{seconds:8.3f} s {len(data) / 2**20:8.2f} MiB")


def cleanup_table(repeats):
    print("\n2. Small-region clean-up, 2048 x 2048, 8 labels, min_size 20, connectivity 2")
    print(f"  {'block':>5} {'mean run':>9} {'as runs':>9} {'as pixels':>10}  same")
    rng = np.random.default_rng(1)
    default = _graph._SHORTEST_MEAN_RUN
    try:
        for block in (1, 2, 3, 4, 6, 8):
            coarse = rng.integers(0, 8, (2048 // block + 1, 2048 // block + 1))
            labels = ndimage.zoom(coarse, block, order=0)[:2048, :2048].astype(np.int32)
            runs = np.count_nonzero(np.diff(labels, axis=1)) + labels.shape[0]
            results = []
            for shortest in (0, 10 ** 9):            # runs always, pixels always
                _graph._SHORTEST_MEAN_RUN = shortest
                results.append(timed(lambda: remove_small_regions(labels, 20, connectivity=2),
                                     repeats))
            same = np.array_equal(results[0][1], results[1][1])
            print(f"  {block:>5} {labels.size / runs:8.2f}p {results[0][0]:8.2f}s "
                  f"{results[1][0]:9.2f}s  {same}")
    finally:
        _graph._SHORTEST_MEAN_RUN = default
    print(f"  (runs are used where the mean run is at least {default} pixels)")


def gradient_table(lab, repeats):
    print("\n3. Squared gradient of the Lab map, 4096 x 4096, one OpenCV thread")
    threads = cv2.getNumThreads()
    default = regions._GRADIENT_STRIPE_VALUES
    cv2.setNumThreads(1)
    try:
        for pixels in (1 << 16, 1 << 18, 1 << 19, 1 << 20, 1 << 30):
            regions._GRADIENT_STRIPE_VALUES = 3 * pixels
            seconds, _ = timed(lambda: regions._squared_gradient(lab, np.ones(2)), repeats)
            name = "one stripe" if pixels >= 1 << 30 else f"2^{pixels.bit_length() - 1} pixels"
            mark = "  (default)" if 3 * pixels == default else ""
            print(f"  stripes of {name:<14}{seconds:8.3f} s{mark}")
    finally:
        regions._GRADIENT_STRIPE_VALUES = default
        cv2.setNumThreads(threads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (default 3)")
    args = parser.parse_args()
    print("\n".join(machine_lines()))
    print(f"gmmseg {gmmseg.__version__}, numpy {np.__version__}, OpenCV {cv2.__version__}")
    image = photo(4096)
    seg = gmmseg.segment(image)
    png_table(seg.overlay(), args.repeats)
    if _graph._use_compiled():
        cleanup_table(args.repeats)
    else:
        print("\n2. (skipped: the compiled kernels are not in use)")
    gradient_table(gmmseg.features.lab(image), args.repeats)


if __name__ == "__main__":
    main()
