"""Batch throughput: ``run_batch`` on 64 images of 512 x 512 with 1 and 2 workers.

Writes the images (colour regions with noise, a different layout each) as
PNG into a temporary folder, runs :func:`gmmseg.batch.run_batch` once with
``jobs=1`` and once with ``jobs=2`` (K = 4, default features, seed 0, each
into its own empty output folder), and prints the throughput in images/s side
by side.  The 2-worker run should reach at least 1.7x the 1-worker
throughput on a 2-core machine.

Also printed, to tell poor scaling from a busy machine: the 1-minute load
average before each run, and the mean time one image takes inside a worker.
If that time grows with 2 workers, the workers did not get a core each
(other processes were running); the speed-up is then not meaningful.

Both runs use one EM/BLAS thread per worker (``--threads 1``, the default
here) so that the comparison measures the process-level parallelism only;
``--threads 0`` uses run_batch's own default instead (cores // jobs, i.e.
the 1-worker run may use every core inside EM).

Usage::

    python scripts/bench_batch.py [--n-images 64] [--size 512] [--jobs 1 2] [--threads 1]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from gmmseg.batch import find_inputs, run_batch

COLOURS = np.array([(200, 40, 40), (40, 170, 60), (40, 60, 200), (230, 220, 200)], np.float32)


def make_image(size, seed):
    """Four colour regions from a random Voronoi layout, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (8, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    d = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    region = np.argmin(d, axis=-1) % len(COLOURS)
    img = COLOURS[region] + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per worker; 0: run_batch's default")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        in_dir = Path(tmp) / "in"
        in_dir.mkdir()
        for i in range(args.n_images):
            cv2.imwrite(str(in_dir / f"img{i:03d}.png"),
                        make_image(args.size, i)[..., ::-1])
        items = find_inputs(in_dir)
        results = {}
        for jobs in args.jobs:
            out_dir = Path(tmp) / f"out_j{jobs}"
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            report = run_batch(items, out_dir, segment_kwargs={"n_components": 4,
                                                               "random_state": 0},
                               jobs=jobs, threads=args.threads or None)
            seconds = time.perf_counter() - t0
            if report.exit_code:
                raise SystemExit(f"jobs={jobs}: {report.n_failed} inputs failed: "
                                 f"{report.failures[0]['error']}")
            per_image = sum(r["seconds"] for r in report.rows) / len(report.rows)
            results[jobs] = (seconds, len(items) / seconds, report.options["threads"],
                             per_image, load)
        labels = [sorted((Path(tmp) / f"out_j{j}").glob("*_labels.png")) for j in args.jobs]
        identical = all(
            all(a.read_bytes() == b.read_bytes() for a, b in zip(labels[0], other))
            for other in labels[1:])

    base = results[args.jobs[0]][1]
    print(f"{args.n_images} images of {args.size} x {args.size}, K = 4")
    print(f"{'jobs':>6} {'threads':>8} {'seconds':>9} {'images/s':>9} {'speed-up':>9} "
          f"{'s/image in worker':>18} {'load before':>12}")
    for jobs, (seconds, rate, threads, per_image, load) in results.items():
        print(f"{jobs:>6} {threads:>8} {seconds:>9.2f} {rate:>9.2f} {rate / base:>8.2f}x "
              f"{per_image:>18.3f} {load:>12.2f}")
    print(f"label maps identical across runs: {'yes' if identical else 'no'}")


if __name__ == "__main__":
    main()
