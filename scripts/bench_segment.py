"""End to end: ``segment`` + ``save`` with every default, against scikit-image ``slic``.

For a 1024 x 1024 and a 4096 x 4096 photo (``sample_images/astronaut.png``
upscaled), in one process:

1. ``gmmseg.segment(photo)`` + ``seg.save(out)`` with every default (K = 4,
   ``lab,position``, the connected regions and their overlay), after one
   run that is not counted (the first touch of fresh memory costs up to
   2 ms per MiB on some VMs; its time and memory growth are printed apart);
   then ``skimage.segmentation.slic(photo)`` with its defaults on the same
   photo.  Several repeats each, one result alive at a time (as a batch
   holds them; the previous run's result is released before the next run
   starts): median and spread (lowest to highest), and
   the ratio of the medians against the targets (issue #19: at most 0.4x
   ``slic`` at 1024 x 1024, 0.1x at 4096 x 4096).
2. Where the time goes, each part timed alone with the floor it is measured
   against in the same run:

   * features, fit, labelling: ``segment``'s own timings (medians of the
     repeats).  Floors: Lab conversion (``cv2.cvtColor``) plus writing the
     (N, D) float32 matrix once at memory-copy speed; the fit's EM
     iterations at this machine's sgemm and ``cv2.exp`` rates
     (``N_fit K (4 D^2 + 7 D)`` flops and ``N_fit K`` exps each, start-up
     trials not counted); one E-step over all pixels (``N K (2 D^2 + 3 D)``
     flops, ``N K`` exps) plus writing labels and log-likelihoods.  The
     features and the labelling also pay the first touch of the arrays they
     must create (features and the Lab map kept for the regions; labels and
     log-likelihoods), at the rate measured for fresh memory;
   * statistics (``seg.stats()``): one counting pass over the pixels (a
     histogram of a grey channel, ``cv2.calcHist``); overlay drawing
     (``seg.overlay()``): one blend of the photo with itself into a third
     picture (``cv2.addWeighted``);
   * encodes (labels, overlay, regions and regions overlay PNGs, as a save
     writes them, one after the other): deflating a photo's and a grey
     map's raw pixels with the deflate and level gmmseg's PNG encoder uses
     (ISA-L or zlib, printed), shared over the cores;
   * regions (``seg.regions()`` from scratch): one ``cv2.connectedComponents``
     of the label map and one Gaussian blur of the Lab map.

   A save overlaps the regions with the overlay, the statistics and the
   encodes (threads), so the parts add up to more than its wall time.
3. Peak memory: growth of the process's resident set over ``segment`` +
   ``save``, sampled every 2 ms from /proc (Linux); highest over the repeats.

Usage::

    python scripts/bench_segment.py [--quick] [--repeats N] [--sizes 1024,4096]

``--quick`` runs 512 x 512 and 1024 x 1024 with two repeats (development
only; the targets are stated for the full sizes).  Hold the machine-wide
lock when figures are meant to be compared (``flock /tmp/gmmseg-cpu.lock``).
"""

import argparse
import os
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import slic

import gmmseg
from gmmseg._system import machine_lines
from gmmseg.io import _png, write_png

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {1024: 0.4, 4096: 0.1}


def rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn):
    """Run ``fn``; return its result, wall seconds and peak RSS growth in MiB."""
    base = rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t = time.perf_counter()
    try:
        out = fn()
    finally:
        elapsed = time.perf_counter() - t
        done.set()
        watcher.join()
    return out, elapsed, (max(peak[0], rss_bytes()) - base) / 2 ** 20


def huge_pages():
    """The kernel's transparent-huge-page settings: NumPy advises its large
    arrays to use huge pages, and with ``defrag`` "madvise" a fresh array
    can stall while the kernel compacts memory (numpy/numpy#31590), which
    moves the features' and labelling's times from run to run."""
    chosen = []
    for name in ("enabled", "defrag"):
        try:
            words = Path(f"/sys/kernel/mm/transparent_hugepage/{name}").read_text().split()
        except OSError:
            return "not available"
        chosen.append(f"{name} " + next((w.strip("[]") for w in words if w.startswith("[")), "?"))
    return ", ".join(chosen)


def timed(fn, repeats=3):
    """Median wall seconds of ``fn()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def floors():
    """This machine's rates, measured now: memory copy, sgemm, exp."""
    source = np.ones(64 << 20, np.float32)          # 256 MiB
    target = np.empty_like(source)
    np.copyto(target, source)
    copy = 2 * source.nbytes / timed(lambda: np.copyto(target, source)) / 1e9   # read + write
    x = np.random.default_rng(0).random((4096, 256), dtype=np.float32)
    w = np.random.default_rng(1).random((256, 256), dtype=np.float32)
    gemm = 2 * 4096 * 256 * 256 * 20 / timed(lambda: [x @ w for _ in range(20)]) / 1e9
    e = (np.random.default_rng(2).random((2048, 2048), dtype=np.float32) * -30)
    exps = np.empty_like(e)
    cv2.exp(e, exps)
    exp = e.size / timed(lambda: cv2.exp(e, exps)) / 1e9
    fresh = []
    for _ in range(3):          # first touch of freshly mapped memory (page faults)
        t = time.perf_counter()
        np.ones(64 << 20, np.float32)
        fresh.append(time.perf_counter() - t)
    return {"copy": copy, "gemm": gemm, "exp": exp, "fresh": statistics.median(fresh) / 256}


def photo(size):
    rgb = cv2.cvtColor(cv2.imread(str(ROOT / "sample_images" / "astronaut.png")),
                       cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)


def spread(values):
    return (f"median {statistics.median(values):6.3f} s "
            f"(spread {min(values):.3f}-{max(values):.3f}, {len(values)} runs)")


def run_defaults(image, out):
    seg = gmmseg.segment(image)
    seg.save(out, "bench", overwrite=True)
    return seg


def breakdown(image, seg, timings, rate, n_cores, out):
    """Each part of segment + save alone, beside its floor: list of (part, s, floor s)."""
    n = image.shape[0] * image.shape[1]
    k = seg.n_components
    d = seg.features.n_features_
    model = seg.model
    n_fit = seg.info["fit_samples"]
    per_gb = 1e9 * rate["copy"]
    unit = (image / np.float32(255)).astype(np.float32)
    lab_floor = timed(lambda: cv2.cvtColor(unit, cv2.COLOR_RGB2Lab))
    em_iteration = n_fit * k * (4 * d * d + 7 * d) / (rate["gemm"] * 1e9) + \
        n_fit * k / (rate["exp"] * 1e9)
    e_step = n * k * (2 * d * d + 3 * d) / (rate["gemm"] * 1e9) + n * k / (rate["exp"] * 1e9)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    # One counting pass over the pixels (a histogram of one channel), and
    # one blend of two pictures of the image's size into a third.
    count_pass = timed(lambda: cv2.calcHist([grey], [0], None, [256], [0, 256]))
    blended = np.empty_like(image)
    blend_pass = timed(lambda: cv2.addWeighted(image, 0.5, image, 0.5, 0.0, dst=blended))
    # Arrays a step must create: the (N, D) features and the Lab map kept
    # for the regions; labels and log-likelihoods.
    fresh = rate["fresh"] / 2 ** 20
    rows = [
        ("features", timings["features"],
         lab_floor + (image.nbytes + 4 * n * d) / per_gb + fresh * 4 * n * (d + 3)),
        (f"fit ({model.n_iter_} EM iterations on {n_fit:,} px)", timings["fit"],
         model.n_iter_ * em_iteration),
        ("labelling", timings["predict"], e_step + 8 * n / per_gb + fresh * 8 * n),
        ("statistics", timed(seg.stats), count_pass),
        ("overlay drawing", timed(seg.overlay), blend_pass),
    ]
    overlay = seg.overlay()
    labels8 = seg.labels.astype(np.uint8)
    regions = seg.regions()

    def encodes():
        for name, array in (("l", labels8), ("o", overlay), ("r", regions.astype(np.uint8)),
                            ("ro", overlay)):
            write_png(Path(out) / f"part_{name}.png", array, overwrite=True)

    # Deflating the raw pixels once, with the deflate and level the encoder uses.
    deflate = _png._deflate
    rgb_png = timed(lambda: deflate.compress(image, _png._LEVEL))
    grey_png = timed(lambda: deflate.compress(labels8, _png._LEVEL))
    rows.append(("encodes (4 PNGs, one after the other)", timed(encodes),
                 max(rgb_png, (2 * rgb_png + 2 * grey_png) / n_cores)))
    lab_map = gmmseg.features.lab(seg.image)
    binary = (seg.labels == 0).astype(np.uint8)
    region_floor = timed(lambda: cv2.connectedComponents(binary)) + timed(
        lambda: cv2.GaussianBlur(lab_map, (0, 0), 1.0))

    def fresh_regions():
        seg._hierarchies.clear()        # what a save works out, from scratch
        return seg.regions()

    rows.append(("regions (hierarchy and cut)", timed(fresh_regions), region_floor))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="512 and 1024 pixels square, two repeats (development)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per size (default 5 at 1024, 3 at 4096; quick: 2)")
    parser.add_argument("--sizes", default=None, help="comma-separated sides, e.g. 1024,4096")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import skimage

    print("\n".join(machine_lines()))
    print(f"PNG deflate: {_png.deflate_name()} (level {_png._LEVEL}); transparent huge pages: "
          f"{huge_pages()}")
    print(f"gmmseg {gmmseg.__version__}, numpy {np.__version__}, OpenCV {cv2.__version__}, "
          f"scikit-image {skimage.__version__}")
    rate = floors()
    n_cores = os.cpu_count() or 1
    print(f"floors measured now: memory copy {rate['copy']:.1f} GB/s, sgemm "
          f"{rate['gemm']:.0f} GFLOP/s, cv2.exp {rate['exp']:.2f} G/s, fresh memory "
          f"{1e3 * rate['fresh']:.2f} ms per MiB (first touch)")
    sizes = [512, 1024] if args.quick else [1024, 4096]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    gmmseg.segment(photo(64))       # imports and OpenCV's first calls
    with tempfile.TemporaryDirectory() as out:
        for size in sizes:
            repeats = args.repeats or (2 if args.quick else (5 if size <= 1024 else 3))
            image = photo(size)
            print(f"\n{size} x {size} photo, segment + save with defaults (K = 4, "
                  "lab,position, connected regions)")
            _, cold, cold_mem = measure(lambda: run_defaults(image, out))
            print(f"  first run (not counted): {cold:.3f} s, peak +{cold_mem:.0f} MiB")
            runs = []
            for _ in range(repeats):
                # One result alive at a time, as in a batch: results kept from
                # earlier runs would make each run map (and fault in) fresh memory.
                seg = None
                seg, seconds, grown = measure(lambda: run_defaults(image, out))
                runs.append((seg.info["timings"], seconds, grown))
            ours = [t for _, t, _ in runs]
            peak = max(m for _, _, m in runs)
            slics = [measure(lambda: slic(image))[1] for _ in range(repeats)]
            ratio = statistics.median(ours) / statistics.median(slics)
            target = TARGETS.get(size)
            verdict = ("" if target is None else
                       f", target <= {target}x: {'met' if ratio <= target else 'NOT met'}")
            print(f"  gmmseg segment + save : {spread(ours)}, peak +{peak:.0f} MiB")
            print(f"  skimage slic          : {spread(slics)}")
            print(f"  ratio gmmseg / slic   : {ratio:.3f}x{verdict}")
            timings = {key: statistics.median(r[0][key] for r in runs)
                       for key in ("features", "fit", "predict")}
            print(f"  {'part':<44}{'s':>8}{'floor s':>10}{'x floor':>9}")
            for part, seconds, floor in breakdown(image, seg, timings, rate, n_cores, out):
                print(f"  {part:<44}{seconds:8.3f}{floor:10.3f}{seconds / floor:8.1f}x")
            del runs, seg


if __name__ == "__main__":
    main()
