"""EM speed and memory: gmmseg.GaussianMixture vs scikit-learn, side by side.

Features come from a real photo: Lab colour plus scaled x, y of
``sample_images/astronaut.png`` upscaled to 1024 x 1024 (N = 1,048,576, D = 5),
standardised.  For K in {4, 8} and covariance full and diag it prints:

* ms per EM iteration for both, started from the same initial parameters;
* whole-fit time for both with their own default initialisation, and the
  mean log-likelihood of the fitted models over all rows, for seeds 0, 1, 2
  (mixtures have many local optima; one seed proves little);
* peak memory (tracemalloc: bytes numpy allocated) of a fit for both;
* the float32 GEMM speed of this machine, to read the figures against.

Usage::

    python scripts/bench_em.py [--size 1024] [--quick]

It takes about 10 minutes on 2 cores, nearly all of it in scikit-learn.
"""

import argparse
import os
import time
import tracemalloc
import warnings
from pathlib import Path

import cv2
import numpy as np
import threadpoolctl
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gmmseg import GaussianMixture
from gmmseg.features import FeatureExtractor
from gmmseg.io import as_image

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


def photo_features(size):
    rgb = cv2.cvtColor(cv2.imread(str(ROOT / "sample_images" / "astronaut.png")),
                       cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)
    return FeatureExtractor("lab,position").fit_transform(as_image(rgb))


def gemm_gflops():
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    a @ a
    t = time.perf_counter()
    for _ in range(5):
        a @ a
    return 5 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def peak_mib(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--quick", action="store_true", help="K = 4 full only")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # non-convergence is expected with tol = 0

    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"])
            for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    print(f"cores: {os.cpu_count()}  BLAS: {blas}  env: {env}")
    print(f"float32 GEMM (2048^3, all threads): {gemm_gflops():.0f} GFLOP/s")
    X32 = photo_features(args.size)
    X64 = X32.astype(np.float64)
    print(f"features: N = {X32.shape[0]:,}, D = {X32.shape[1]} (Lab + x, y, standardised)\n")

    cases = [(4, "full")] if args.quick else [(4, "full"), (8, "full"), (4, "diag"), (8, "diag")]
    header = (f"{'K':>2} {'cov':5} | {'sk ms/it':>8} {'gm ms/it':>8} {'ratio':>6} | "
              f"{'sk fit s':>8} {'gm fit s':>8} {'ratio':>6} | {'sk mean ll':>10} "
              f"{'gm mean ll':>10} | {'sk MiB':>7} {'gm MiB':>7} | iters sk/gm")
    print(header)
    print("-" * len(header))
    per_seed = []
    for k, cov in cases:
        start = SkGaussianMixture(k, covariance_type=cov, max_iter=1, random_state=0).fit(X64[::97])
        init = dict(weights_init=start.weights_, means_init=start.means_,
                    precisions_init=start.precisions_, covariance_type=cov, tol=0.0)
        sk_iters, gm_iters = 3, 20
        _, t_sk = timed(lambda: SkGaussianMixture(k, max_iter=sk_iters, **init).fit(X64))
        _, t_gm = timed(lambda: GaussianMixture(k, max_iter=gm_iters, **init).fit(X32))
        sk_it, gm_it = t_sk / sk_iters * 1e3, t_gm / gm_iters * 1e3

        # Mixtures have many local optima: compare whole fits over a few seeds.
        sk_fits = [timed(lambda: SkGaussianMixture(k, covariance_type=cov, random_state=s).fit(X64))
                   for s in SEEDS]
        gm_fits = [timed(lambda: GaussianMixture(k, covariance_type=cov, random_state=s).fit(X32))
                   for s in SEEDS]
        f_sk = np.median([t for _, t in sk_fits])
        f_gm = np.median([t for _, t in gm_fits])
        ll_sk = [m.score(X64) for m, _ in sk_fits]
        ll_gm = [m.score(X32) for m, _ in gm_fits]
        iters = "/".join(str(m.n_iter_) for m, _ in sk_fits) + " | " + "/".join(
            str(m.n_iter_) for m, _ in gm_fits)
        per_seed.append(f"{k:>2} {cov:5} scikit-learn " + " ".join(f"{v:.4f}" for v in ll_sk)
                        + "   gmmseg " + " ".join(f"{v:.4f}" for v in ll_gm))
        m_sk = peak_mib(lambda: SkGaussianMixture(k, max_iter=2, **init).fit(X64))
        m_gm = peak_mib(lambda: GaussianMixture(k, max_iter=2, **init).fit(X32))
        print(f"{k:>2} {cov:5} | {sk_it:8.0f} {gm_it:8.1f} {sk_it / gm_it:5.1f}x | "
              f"{f_sk:8.2f} {f_gm:8.2f} {f_sk / f_gm:5.1f}x | {np.median(ll_sk):10.4f} "
              f"{np.median(ll_gm):10.4f} | {m_sk:7.0f} {m_gm:7.0f} | {iters}", flush=True)
    print(f"\nmean log-likelihood of each fit over all rows, seeds {SEEDS}:")
    print("\n".join(per_seed))
    print("\nms/it: same initial parameters, tol = 0. fit s: median over seeds of whole fits "
          "with each library's default init, tol = 1e-3; mean ll: median over those fits, "
          "over all rows (higher is better). MiB: tracemalloc peak of a 2-iteration fit "
          "(gmmseg input float32, scikit-learn float64 as it converts to).")


if __name__ == "__main__":
    main()
