"""Choosing K: gmmseg's sweep vs the scikit-learn tutorial loop.

On a 1024 x 1024 RGB photo (``sample_images/astronaut.png`` upscaled), K = 1..10:

* gmmseg: ``gmmseg.select_k(photo, 1, 10, features="lab")`` -- Lab
  features built once, one 150,000-pixel fit sample, one mixture per K with
  work shared between K, BIC and AIC on the fit sample, and the count of
  clusters by ICL on 5,000 of its pixels (R, G, B, de-quantised); K is the
  count where its clusters are clear, else BIC's;
* the tutorial a user would otherwise write: ``skimage.color.rgb2lab``,
  then scikit-learn ``GaussianMixture(K).fit(X)`` and ``.bic(X)`` on all
  pixels for each K.

Printed side by side: time and BIC per K, the total time and the K each
picks (gmmseg by ICL and by BIC), and where gmmseg's BIC choice lies on
scikit-learn's own BIC curve (target: the same K, or one whose BIC is
within 1% of the curve's minimum).  ``--repeat N`` times gmmseg's sweep N
times and prints the spread.

Then what sharing work between K buys: on the same fit sample, the sweep as
independent ``GaussianMixture(K).fit`` calls (as they run today, and with
BLAS pinned to one thread as ``select_k`` does), time and BIC per K.

Usage::

    python scripts/bench_select_k.py [--skip-tutorial] [--skip-reuse] [--repeat 5] [--size 1024]
"""

import argparse
import os
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
from skimage.color import rgb2lab
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

import gmmseg
from gmmseg._system import machine_lines
from gmmseg.features import FeatureExtractor
from gmmseg.pipeline.segment import DEFAULT_MAX_FIT_SAMPLES, fit_sample

ROOT = Path(__file__).resolve().parents[1]
K_VALUES = range(1, 11)


def photo(size):
    rgb = cv2.cvtColor(cv2.imread(str(ROOT / "sample_images" / "astronaut.png")),
                       cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)


def tutorial(rgb):
    """The seed tutorial's loop: scikit-learn on every pixel's L*a*b*, each K."""
    X = rgb2lab(rgb).reshape(-1, 3)
    rows = []
    for k in K_VALUES:
        t = time.perf_counter()
        gm = SkGaussianMixture(k, random_state=0).fit(X)
        bic = gm.bic(X)
        rows.append({"k": k, "bic": bic, "seconds": time.perf_counter() - t,
                     "n_iter": gm.n_iter_})
    return rows


def independent(X_fit, pinned):
    """The same sweep without sharing: one plain GaussianMixture fit per K."""
    rows = []
    for k in K_VALUES:
        t = time.perf_counter()
        if pinned:
            with threadpool_limits(limits=1, user_api="blas"):
                gm = gmmseg.GaussianMixture(k, random_state=0).fit(X_fit)
        else:
            gm = gmmseg.GaussianMixture(k, random_state=0).fit(X_fit)
        rows.append({"k": k, "bic": gm.bic(X_fit), "seconds": time.perf_counter() - t})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-tutorial", action="store_true",
                        help="only time gmmseg (the tutorial takes minutes)")
    parser.add_argument("--skip-reuse", action="store_true",
                        help="leave out the comparison with independent fits")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time gmmseg's sweep this many times (min, median, max)")
    parser.add_argument("--size", type=int, default=1024, help="photo side in pixels")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("\n".join(machine_lines()))
    print(f"load: {os.getloadavg()[0]:.2f}  gmmseg {gmmseg.__version__}")

    rgb = photo(args.size)
    gmmseg.select_k(rgb[:64, :64], 1, 2)  # warm up imports and OpenCV
    times = []
    for _ in range(max(args.repeat, 1)):
        t = time.perf_counter()
        result = gmmseg.select_k(rgb, 1, 10, features="lab", random_state=0)
        times.append(time.perf_counter() - t)
    t_gm = float(np.median(times))
    gm_rows = {r["n_components"]: r for r in result.rows}
    print(f"\n{args.size} x {args.size} photo, K = 1..10, full covariances")
    count = result.info["count"]
    print(f"gmmseg.select_k: features {result.info['timings']['features']:.2f} s, "
          f"{result.info['fit_samples']:,} fit pixels, shared k-means++ seeding "
          f"{result.info['seeding_seconds']:.2f} s, {result.info['trial_rows']:,} screening rows; "
          f"count on {count['fit_samples']:,} pixels of {count['features']} "
          f"({result.count.info['seconds']:.2f} s): ICL K = {count['chosen']}, "
          f"{'clear' if count['clear'] else 'not clear'}")
    if len(times) > 1:
        print(f"sweep times over {len(times)} runs: min {min(times):.2f} s, median {t_gm:.2f} s, "
              f"max {max(times):.2f} s")

    tut = None if args.skip_tutorial else tutorial(rgb)
    header = f"{'K':>3} {'gmmseg BIC (fit sample)':>24} {'s':>6} {'start':>6}"
    if tut:
        header += f"   {'sklearn BIC (all pixels)':>25} {'s':>7} {'iter':>5}"
    print(header)
    for k in K_VALUES:
        r = gm_rows[k]
        mark = "*" if k == result.n_components else " "
        line = f"{k:>3} {r['bic']:>23.1f}{mark} {r['seconds']:6.2f} {r['start']:>6}"
        if tut:
            s = tut[k - 1]
            best = min(tut, key=lambda x: x["bic"])["k"]
            line += (f"   {s['bic']:>24.1f}{'*' if k == best else ' '} {s['seconds']:7.2f} "
                     f"{s['n_iter']:>5}")
        print(line)
    k_bic = result.best_by("bic")[0]
    print(f"total: gmmseg {t_gm:.2f} s (features + sweep + count), picks K = "
          f"{result.n_components} ({result.info['decided_by']}; K = {k_bic} by BIC)")
    if tut:
        t_sk = sum(s["seconds"] for s in tut)
        sk_bic = np.array([s["bic"] for s in tut])
        k_sk = int(np.argmin(sk_bic)) + 1
        gap = (sk_bic[k_bic - 1] - sk_bic.min()) / abs(sk_bic.min())
        print(f"       scikit-learn {t_sk:.1f} s, picks K = {k_sk} by BIC")
        print(f"speed-up: {t_sk / t_gm:.1f}x (target >= 20x)")
        print(f"gmmseg's BIC choice K = {k_bic} on scikit-learn's BIC curve: "
              f"{100 * gap:.3f}% above its minimum (target: same K or <= 1%) -> "
              f"{'OK' if k_bic == k_sk or gap <= 0.01 else 'MISSED'}")
    if not args.skip_reuse:
        reuse(rgb)


def reuse(rgb):
    """What sharing work between K buys, on the very same fit sample."""
    img = gmmseg.as_image(rgb)
    X = FeatureExtractor("lab").fit_transform(img, valid=img.valid, random_state=0)
    X_fit = fit_sample(X, DEFAULT_MAX_FIT_SAMPLES, 0)
    t = time.perf_counter()
    again = gmmseg.mixture.select_k(X_fit, K_VALUES, random_state=0)
    t_shared = time.perf_counter() - t
    plain = independent(X_fit, pinned=False)
    pinned = independent(X_fit, pinned=True)
    n = len(X_fit)
    print(f"\nreuse between K, same {n:,}-row fit sample (BIC per fit pixel; lower is better)")
    print(f"{'K':>3} {'shared':>9} {'s':>6} {'independent':>12} {'s':>6} {'indep. pinned':>14} "
          f"{'s':>6}")
    for k in K_VALUES:
        a, b, c = again.rows[k - 1], plain[k - 1], pinned[k - 1]
        print(f"{k:>3} {a['bic'] / n:9.4f} {a['seconds']:6.2f} {b['bic'] / n:12.4f} "
              f"{b['seconds']:6.2f} {c['bic'] / n:14.4f} {c['seconds']:6.2f}")
    t_plain = sum(r["seconds"] for r in plain)
    t_pinned = sum(r["seconds"] for r in pinned)
    one_fit = max(r["seconds"] for r in pinned)
    print(f"sweep: shared {t_shared:.2f} s, independent {t_plain:.2f} s, independent with "
          f"BLAS pinned {t_pinned:.2f} s; the slowest single fit (pinned) {one_fit:.2f} s, "
          f"so the shared sweep costs {t_shared / one_fit:.1f} of it")
    wins = sum(r["start"] == "grown" for r in again.rows)
    better = sum(a["bic"] < c["bic"] for a, c in zip(again.rows, pinned))
    print(f"grown starts won the screening for {wins} of {len(again.rows)} K; the shared "
          f"sweep's BIC is lower than the independent (pinned) fit's for {better} of "
          f"{len(again.rows)} K")


if __name__ == "__main__":
    main()
