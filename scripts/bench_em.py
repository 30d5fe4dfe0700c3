"""EM iteration speed against this machine's floor and against scikit-learn.

Features come from a real photo: Lab colour plus scaled x, y of
``sample_images/astronaut.png`` upscaled to 1024 x 1024 (N = 1,048,576, D = 5),
standardised.  In one run it prints:

* the machine: CPU model, cores, BLAS libraries (threadpoolctl) and whether
  ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` are set;
* this machine's floor, measured now: GEMM GFLOP/s on all cores (one BLAS
  thread each, cache-sized blocks), ``cv2.exp`` elements/s on all cores,
  memory copy GB/s;
* for K in {4, 8, 16}, every covariance type, float32 and float64: gmmseg's
  ms per EM iteration (median, min and max over repeats), the floor of that
  case (its flops at the GEMM rate + its exps at the exp rate + reading X
  once) and the ratio to it;
* scikit-learn's ms per iteration from the same start (K = 8 full and diag
  with ``--quick``, every K and type otherwise; float64, as it computes) and
  the speed-up of gmmseg's float32 iteration over it;
* with the compiled kernels in use (Numba, the ``fast`` extra), the NumPy
  kernels' float32 ms per iteration from the same start beside them;
* which of the targets of issue 19 are met: every case within 5x of the
  floor, >= 50x scikit-learn for K = 8 full and >= 25x for K = 8 diag.

Usage::

    python scripts/bench_em.py [--size 1024] [--repeats 5] [--quick]

About 1 minute with ``--quick`` on 2 cores, 3-4 minutes without (nearly all
of it scikit-learn).
"""

import argparse
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import threadpoolctl

from gmmseg import GaussianMixture
from gmmseg._system import available_cpus, machine_lines
from gmmseg.mixture import _em
from gmmseg.features import FeatureExtractor
from gmmseg.io import as_image

ROOT = Path(__file__).resolve().parents[1]
KS = (4, 8, 16)
COVS = ("full", "tied", "diag", "spherical")
TARGET_FLOOR = 5.0
TARGET_SKLEARN = {(8, "full"): 50.0, (8, "diag"): 25.0}


def photo_features(size):
    rgb = cv2.cvtColor(cv2.imread(str(ROOT / "sample_images" / "astronaut.png")),
                       cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC)
    return FeatureExtractor("lab,position").fit_transform(as_image(rgb))


def on_all_cores(fn, n_threads, seconds=0.3):
    """Total rate of ``fn`` (which returns its work units) run on every thread."""
    def loop(_):
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            done += fn()
        return done / (time.perf_counter() - t0)
    with threadpoolctl.threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(n_threads) as pool:
        return sum(pool.map(loop, range(n_threads)))


def floor_rates(n_threads):
    """GEMM flop/s per dtype, cv2.exp elements/s per dtype, copy bytes/s."""
    rng = np.random.default_rng(0)
    gemm, exp = {}, {}
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((256, 256)).astype(dtype)
        out = np.empty_like(a)
        gemm[dtype] = on_all_cores(lambda a=a, out=out: np.matmul(a, a, out=out).size * 512,
                                   n_threads)
        e = -rng.random((64, 4096)).astype(dtype) * 50
        exp_out = np.empty_like(e)
        exp[dtype] = on_all_cores(lambda e=e, o=exp_out: cv2.exp(e, o).size, n_threads)
    big = np.ones(2**25)  # 256 MiB
    dst = np.empty_like(big)
    np.copyto(dst, big)
    t0 = time.perf_counter()
    for _ in range(3):
        np.copyto(dst, big)
    copy = 3 * 2 * big.nbytes / (time.perf_counter() - t0)  # read + write
    return gemm, exp, copy


def case_floor(n, d, k, cov, dtype, gemm, exp, copy):
    """Seconds one EM iteration cannot beat: flops, exps and reading X once."""
    per_row = 4 * d * d + 7 * d if cov in ("full", "tied") else 8 * d
    return (n * k * per_row / gemm[dtype] + n * k / exp[dtype]
            + n * d * np.dtype(dtype).itemsize / copy)


def starts(X64, k, cov):
    """One shared start per case: a short gmmseg fit on every 97th row."""
    gm = GaussianMixture(k, covariance_type=cov, max_iter=2, init_trials=1,
                         random_state=0).fit(X64[::97])
    return {"weights_init": gm.weights_, "means_init": gm.means_,
            "precisions_init": gm.precisions_, "covariance_type": cov, "tol": 0.0}


def per_iteration(make, X, repeats, iters):
    """Median, min, max seconds per EM iteration: ``(fit(1 + iters) - fit(1)) / iters``."""
    def fit_seconds(max_iter):
        t0 = time.perf_counter()
        make(max_iter).fit(X)
        return time.perf_counter() - t0
    base = np.median([fit_seconds(1) for _ in range(repeats)])
    each = np.array([(fit_seconds(1 + iters) - base) / iters for _ in range(repeats)])
    return np.median(each), each.min(), each.max()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case")
    parser.add_argument("--quick", action="store_true",
                        help="scikit-learn for K = 8 full and diag only")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # non-convergence is expected with tol = 0
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    n_threads = available_cpus()
    print("\n".join(machine_lines()))
    gemm, exp, copy = floor_rates(n_threads)
    print(f"floor, {n_threads} threads: GEMM 256^3 blocks float32 {gemm[np.float32] / 1e9:.0f}, "
          f"float64 {gemm[np.float64] / 1e9:.0f} GFLOP/s; cv2.exp float32 "
          f"{exp[np.float32] / 1e9:.1f}, float64 {exp[np.float64] / 1e9:.1f} G/s; "
          f"copy {copy / 1e9:.1f} GB/s")
    X32 = photo_features(args.size)
    X64 = X32.astype(np.float64)
    n, d = X32.shape
    print(f"features: N = {n:,}, D = {d} (Lab + x, y, standardised)\n")

    compiled = _em.USE_COMPILED
    header = (f"{'K':>2} {'cov':9} {'dtype':7} | {'ms/iter':>7} {'min':>6} {'max':>6} | "
              f"{'floor':>5} {'ratio':>6} | "
              + (f"{'NumPy':>6} {'gain':>5} | " if compiled else "")
              + f"{'sklearn':>7} {'speed-up':>8}")
    print(header)
    print("-" * len(header))
    ratios, speedups = {}, {}
    for k in KS:
        for cov in COVS:
            init = starts(X64, k, cov)
            for X, dtype in ((X32, np.float32), (X64, np.float64)):
                med, lo, hi = per_iteration(
                    lambda m, k=k, init=init: GaussianMixture(k, max_iter=m, **init),
                    X, args.repeats, 4)
                floor = case_floor(n, d, k, cov, dtype, gemm, exp, copy)
                ratios[k, cov, dtype] = med / floor
                numpy_text = ""
                if compiled and dtype is np.float32:
                    _em.USE_COMPILED = False
                    try:
                        plain, _, _ = per_iteration(
                            lambda m, k=k, init=init: GaussianMixture(k, max_iter=m, **init),
                            X, max(1, args.repeats // 2), 4)
                    finally:
                        _em.USE_COMPILED = True
                    numpy_text = f"{plain * 1e3:6.1f} {plain / med:4.1f}x | "
                elif compiled:
                    numpy_text = f"{'':6} {'':5} | "
                sk_text = ""
                if dtype is np.float32 and (not args.quick or (k, cov) in TARGET_SKLEARN):
                    sk, _, _ = per_iteration(
                        lambda m, k=k, init=init: SkGaussianMixture(k, max_iter=m, **init),
                        X64, 1, 2)
                    speedups[k, cov] = sk / med
                    sk_text = f"{sk * 1e3:7.0f} {sk / med:7.1f}x"
                print(f"{k:>2} {cov:9} {np.dtype(dtype).name:7} | {med * 1e3:7.1f} "
                      f"{lo * 1e3:6.1f} {hi * 1e3:6.1f} | {floor * 1e3:5.1f} "
                      f"{med / floor:5.1f}x | {numpy_text}{sk_text}", flush=True)

    print("\nms/iter: (fit with 5 iterations - fit with 1) / 4 from the same start, tol = 0, "
          f"median of {args.repeats} (min, max); floor: this case's flops "
          "(N K (4 D^2 + 7 D) full/tied, N K 8 D diag/spherical) at the GEMM rate + N K exps "
          "at the cv2.exp rate + reading X once; "
          + ("NumPy: gmmseg's NumPy kernels (GMMSEG_KERNELS=numpy), float32, median of "
             f"{max(1, args.repeats // 2)}, and the compiled kernels' gain over them; "
             if compiled else "")
          + "sklearn: float64, (fit(3) - fit(1)) / 2, speed-up over gmmseg float32.")
    worst = max(ratios, key=ratios.get)
    met = ratios[worst] <= TARGET_FLOOR
    print(f"target: every case within {TARGET_FLOOR:.0f}x of the floor: "
          f"{'met' if met else 'NOT met'} (worst {ratios[worst]:.1f}x: K = {worst[0]} "
          f"{worst[1]} {np.dtype(worst[2]).name})")
    for case, target in TARGET_SKLEARN.items():
        got = speedups.get(case)
        verdict = "not measured" if got is None else (
            f"{'met' if got >= target else 'NOT met'} ({got:.1f}x)")
        print(f"target: >= {target:.0f}x scikit-learn for K = {case[0]} {case[1]}: {verdict}")


if __name__ == "__main__":
    main()
