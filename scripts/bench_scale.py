"""Large scenes: wall time and peak memory of the in-memory and windowed paths.

Generates a synthetic scene in a temporary folder (never committed): a tiled
uint16 GeoTIFF (512 x 512 tiles, deflate level 1, CRS and a nodata corner),
four classes in smooth blobs with Gaussian noise, written stripe by stripe so
that generating it needs little memory.  Then runs ``gmmseg segment -k 6``
on it in a fresh process for each mode and reports wall time and the peak
resident memory of the whole process tree (the command and every child,
Dask workers included: /proc is sampled every 50 ms):

- ``in-memory``: today's path, forced with ``--max-memory 1TB``;
- ``windowed -j 1`` / ``-j 2``: the default budget (2 GiB or a quarter of
  the available memory) with one or two windows at a time;
- ``dask local``: ``--scheduler local -j 2`` (a LocalCluster of two worker
  processes).

``--speed SIZE`` (default 2048) also compares seconds per megapixel on a
SIZE x SIZE scene, in-memory against windowed with a budget that gives
about 1024 x 1024 windows.  Prints the CPU, cores, BLAS (threadpoolctl) and
the OPENBLAS_* variables.  Run it under the machine-wide lock
(``flock /tmp/gmmseg-cpu.lock python scripts/bench_scale.py``).

Usage::

    python scripts/bench_scale.py [--size 10980] [--bands 4 13] [--modes ...] [--speed 2048]
    python scripts/bench_scale.py --size 3000 --bands 4 --speed 1024     # a quick look
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MODES = {
    "in-memory": ["--max-memory", "1TB"],
    "windowed -j 1": ["-j", "1"],
    "windowed -j 2": ["-j", "2"],
    "dask local": ["--scheduler", "local", "-j", "2"],
}


def make_scene(path, size, bands, seed=0):
    """A ``size`` x ``size`` x ``bands`` uint16 tiled GeoTIFF, written 512 rows at a time."""
    import cv2
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    coarse = rng.random((size // 256 + 2, size // 256 + 2)).astype(np.float32)
    means = rng.uniform(500, 4000, (4, bands)).astype(np.float32)
    profile = dict(driver="GTiff", height=size, width=size, count=bands, dtype="uint16",
                   crs="EPSG:32633", transform=Affine(10, 0, 600000, 0, -10, 5000040),
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", zlevel=1,
                   predictor=2, nodata=0, interleave="pixel", BIGTIFF="IF_SAFER")
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    with rasterio.open(path, "w", **profile) as ds:
        for r0 in range(0, size, 512):
            rows = min(512, size - r0)
            classes = np.digitize(field[r0:r0 + rows], [0.3, 0.5, 0.7])
            stripe = np.empty((bands, rows, size), np.uint16)
            for b in range(bands):
                noise = rng.standard_normal((rows, size), dtype=np.float32) * 150
                stripe[b] = np.clip(means[classes, b] + noise, 1, 65535)
            if r0 < size // 10:
                stripe[:, :, : size // 7] = 0
            ds.write(stripe, window=Window(0, r0, size, rows))


def _tree_rss(root):
    """Resident bytes of ``root`` and all its descendants (Linux /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
        todo.extend(children.get(pid, []))
    return total


def run(cmd):
    """``(seconds, peak tree RSS bytes, output)`` of a command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{output}")
    return seconds, peak[0], output.strip()


def in_memory_bytes(size, bands, k=6):
    """gmmseg's estimate of the in-memory working set (``bands`` features)."""
    from gmmseg.pipeline.windowed import BASELINE, bytes_per_pixel

    return BASELINE + size * size * bytes_per_pixel(bands, 2, bands, k)


def available():
    from gmmseg.pipeline.windowed import available_memory

    return available_memory() or 0


def segment(scene, out, extra):
    cmd = [sys.executable, "-m", "gmmseg.cli", "segment", str(scene), "-k", "6", "-o", str(out),
           "--overwrite", *extra]
    return run(cmd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--bands", type=int, nargs="+", default=[4, 13])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--speed", type=int, default=2048,
                        help="side of the s/Mpx comparison scene (0: skip)")
    args = parser.parse_args()
    from gmmseg._system import machine_lines

    print("\n".join(machine_lines()))
    with open("/proc/loadavg", encoding="ascii") as f:
        print(f"load average: {f.read().split()[0]}")
    gib = 2**30
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for bands in args.bands:
            scene = tmp / f"scene_{bands}.tif"
            t = time.perf_counter()
            make_scene(scene, args.size, bands)
            print(f"\n{args.size} x {args.size} x {bands} uint16 scene "
                  f"({scene.stat().st_size / 2**20:.0f} MiB on disk, generated in "
                  f"{time.perf_counter() - t:.0f} s), K = 6")
            print("| mode | wall s | peak RSS (tree) GiB | note |\n|---|---|---|---|")
            for mode in args.modes:
                if mode == "in-memory" and in_memory_bytes(args.size, bands) > 0.8 * available():
                    print(f"| {mode} | - | - | skipped: needs about "
                          f"{in_memory_bytes(args.size, bands) / gib:.0f} GiB "
                          f"(gmmseg's estimate), {available() / gib:.0f} GiB available |")
                    continue
                seconds, peak, output = segment(scene, tmp / "out", MODES[mode])
                note = "windowed" if "windowed" in output else ""
                print(f"| {mode} | {seconds:.1f} | {peak / gib:.2f} | {note} |", flush=True)
            scene.unlink()
        if args.speed:
            scene = tmp / "speed.tif"
            make_scene(scene, args.speed, 4)
            mpx = args.speed**2 / 1e6
            print(f"\n{args.speed} x {args.speed} x 4 scene, K = 6: seconds per megapixel")
            print("| path | wall s | s/Mpx | peak RSS GiB |\n|---|---|---|---|")
            # About 1024 x 1024 windows: the fixed part (~300 MiB) and a window.
            for name, extra in (("in-memory", ["--max-memory", "1TB"]),
                                ("windowed", ["--max-memory", "400MiB"])):
                seconds, peak, _ = segment(scene, tmp / "out", extra)
                print(f"| {name} | {seconds:.2f} | {seconds / mpx:.3f} | {peak / gib:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
