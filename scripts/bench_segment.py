"""End-to-end segmentation: gmmseg vs the scikit-learn tutorial pipeline.

1. A 1024 x 1024 RGB photo (``sample_images/astronaut.png`` upscaled), K = 4,
   Lab + position features:
   * gmmseg: ``gmmseg.segment(photo, 4, features="lab,position")``;
   * the tutorial a user would otherwise write: ``skimage.color.rgb2lab`` plus
     x, y (scaled to 0..100 like L*), scikit-learn ``GaussianMixture`` fitted
     and predicted on all pixels.
   Wall time and peak memory of each.  To judge the fit itself (mixtures have
   many local optima), scikit-learn is also fitted on all rows of gmmseg's
   own feature matrix, and both models' mean log-likelihood over all those
   rows is printed, with the ARI between their labels.
2. ``gmmseg.segment`` alone on a 4096 x 4096 photo: wall time, peak memory.
3. What the defaults cost: ``segment(photo)`` + ``save(out)`` with every
   default (``lab,position``, connected regions cut at the default scale and
   their overlay) against the plain path, ``segment(photo, features="lab")``
   + ``save(out, regions=None)`` (labels, overlay, report), at 1024 x 1024
   and 4096 x 4096, best of 3 each (single runs at 16 Mpx vary by +-10%
   here), with the highest peak memory.

Peak memory is the growth of the process's resident set size over the call,
sampled every 2 ms from /proc (Linux).

Usage::

    python scripts/bench_segment.py [--skip-tutorial]
"""

import argparse
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
from skimage.color import rgb2lab
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gmmseg

ROOT = Path(__file__).resolve().parents[1]


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


def photo(size):
    rgb = cv2.cvtColor(cv2.imread(str(ROOT / "sample_images" / "astronaut.png")),
                       cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)


def tutorial(rgb, k):
    lab = rgb2lab(rgb)
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    X = np.column_stack([lab.reshape(-1, 3), xx.ravel() * 100.0 / w, yy.ravel() * 100.0 / h])
    gm = SkGaussianMixture(k, random_state=0).fit(X)
    return gm.predict(X).reshape(h, w)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-tutorial", action="store_true",
                        help="only time gmmseg (the tutorial takes minutes)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"cores: {os.cpu_count()}  env: {env}  gmmseg {gmmseg.__version__}")

    rgb = photo(1024)
    gmmseg.segment(rgb[:64, :64], 4, features="lab,position")  # warm up imports and OpenCV
    seg, t_gm, m_gm = measure(lambda: gmmseg.segment(rgb, 4, features="lab,position"))
    print(f"\n1024 x 1024, K = 4, lab + position")
    print(f"  gmmseg.segment : {t_gm:7.2f} s  peak +{m_gm:6.0f} MiB  "
          f"({seg.model.n_iter_} EM iterations on {seg.info['fit_samples']:,} pixels)")
    if not args.skip_tutorial:
        _, t_tut, m_tut = measure(lambda: tutorial(rgb, 4))
        print(f"  tutorial       : {t_tut:7.2f} s  peak +{m_tut:6.0f} MiB")
        print(f"  speed-up       : {t_tut / t_gm:7.1f}x")

        X = seg.features.transform(gmmseg.io.as_image(rgb))
        sk = SkGaussianMixture(4, random_state=0).fit(X.astype(np.float64))
        ll_sk = sk.score(X.astype(np.float64))
        ll_gm = seg.model.score(X)
        ari = adjusted_rand_score(sk.predict(X.astype(np.float64)), seg.labels.ravel())
        print("  fit quality on gmmseg's feature matrix (all 1,048,576 rows):")
        print(f"    mean log-likelihood: gmmseg {ll_gm:.4f}, scikit-learn (all rows) "
              f"{ll_sk:.4f}, difference {ll_gm - ll_sk:+.4f}")
        print(f"    ARI between their labels: {ari:.3f}")

    big = photo(4096)
    seg, t_big, m_big = measure(lambda: gmmseg.segment(big, 4, features="lab,position"))
    print(f"\n4096 x 4096, K = 4, lab + position")
    print(f"  gmmseg.segment : {t_big:7.2f} s  peak +{m_big:6.0f} MiB  "
          f"(input image itself {big.nbytes / 2 ** 20:.0f} MiB)")
    print("  stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in seg.info["timings"].items()))

    print("\nDefaults against the plain path, segment + save, K = 4")
    with tempfile.TemporaryDirectory() as tmp:
        def run(image, defaults):
            options = {} if defaults else {"features": "lab"}
            seg = gmmseg.segment(image, 4, **options)
            seg.save(tmp, "bench", overwrite=True, **({} if defaults else {"regions": None}))
            return seg

        for size, image, repeats in ((1024, rgb, 3), (4096, big, 3)):
            times, peaks = {}, {}
            for defaults in (False, True):
                results = [measure(lambda: run(image, defaults)) for _ in range(repeats)]
                times[defaults] = min(t for _, t, _ in results)
                peaks[defaults] = max(m for _, _, m in results)
            print(f"  {size} x {size}: plain (lab, no regions) {times[False]:6.2f} s "
                  f"+{peaks[False]:5.0f} MiB; defaults (lab,position + regions) "
                  f"{times[True]:6.2f} s +{peaks[True]:5.0f} MiB = {times[True] / times[False]:.2f}x")
        # Where the difference goes: the region hierarchy and its cut, alone
        # (once: the hierarchy is kept, a second call only cuts).
        seg = gmmseg.segment(big, 4)
        _, hierarchy, _ = measure(seg.regions)
        print(f"  4096 x 4096: of the defaults' time, the region hierarchy and its cut "
              f"(seg.regions()) take {hierarchy:.2f} s")


if __name__ == "__main__":
    main()
