"""Smoothed segmentation of a noisy 3-D phantom: gmmseg vs dipy's HMRF.

Both segment the same noisy phantom volume (nested ellipsoids, three tissue
classes, Gaussian noise) into three classes with a Potts prior:

* gmmseg: ``gmmseg.segment(volume, 3, smoothing=BETA)`` (mean field inside EM);
* dipy: ``TissueClassifierHMRF().classify(volume, 3, beta)`` (ICM inside EM),
  the tissue classifier of dipy's documentation.

For each it prints the adjusted Rand index against the truth and the wall
time; the plain mixture (no prior) is shown for reference.  dipy is not a
gmmseg dependency: install it in the environment that runs this script
(``pip install dipy``).

Usage::

    python scripts/bench_mrf.py [--shape 64 128 128] [--noise 0.6]
"""

import argparse
import os
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

import gmmseg


def phantom(shape, noise, seed=0):
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    truth = np.zeros(shape, np.int32)
    truth[(x / 0.9) ** 2 + (y / 0.8) ** 2 + (z / 0.9) ** 2 < 1] = 1
    truth[(x / 0.5) ** 2 + (y / 0.45) ** 2 + (z / 0.55) ** 2 < 1] = 2
    rng = np.random.default_rng(seed)
    volume = np.array([100.0, 200.0, 300.0])[truth] + rng.normal(0, noise * 100, shape)
    return volume.astype(np.float32), truth


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128))
    parser.add_argument("--noise", type=float, default=0.6,
                        help="noise standard deviation relative to the class spacing")
    parser.add_argument("--beta", type=float, default=1.0, help="gmmseg smoothing")
    parser.add_argument("--dipy-beta", type=float, nargs="+", default=(0.1, 0.3, 1.0),
                        help="dipy betas to try (its documentation uses 0.1); each is shown")
    args = parser.parse_args()
    try:
        from dipy.segment.tissue import TissueClassifierHMRF
    except ImportError:
        raise SystemExit("this benchmark needs dipy: pip install dipy") from None
    import dipy

    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"cores: {os.cpu_count()}  env: {env}  gmmseg {gmmseg.__version__}  "
          f"dipy {dipy.__version__}")
    volume, truth = phantom(tuple(args.shape), args.noise)
    print(f"phantom {volume.shape}, three classes, noise {args.noise} x class spacing, "
          f"class shares {np.round(np.bincount(truth.ravel()) / truth.size, 2).tolist()}\n")

    def ari(labels):
        return adjusted_rand_score(truth.ravel(), np.asarray(labels).ravel())

    stack = volume[..., None]  # (Z, H, W, 1): a single-channel volume for gmmseg
    gmmseg.segment(stack[:4, :16, :16], 3, smoothing=args.beta)  # warm up imports
    plain, t_plain = timed(lambda: gmmseg.segment(stack, 3))
    smooth, t_gm = timed(lambda: gmmseg.segment(stack, 3, smoothing=args.beta))
    print(f"{'method':38} {'ARI':>6} {'seconds':>8}")
    print(f"{'gmmseg, no prior':38} {ari(plain.labels):6.3f} {t_plain:8.2f}")
    print(f"{f'gmmseg, smoothing={args.beta}':38} {ari(smooth.labels):6.3f} {t_gm:8.2f}",
          flush=True)
    best = None
    for beta in args.dipy_beta:
        (_, labels, _), seconds = timed(
            lambda: TissueClassifierHMRF(verbose=False).classify(volume, 3, beta))
        score = ari(labels)
        print(f"{f'dipy TissueClassifierHMRF, beta={beta}':38} {score:6.3f} {seconds:8.2f}",
              flush=True)
        if best is None or score > best[0]:
            best = (score, seconds, beta)
    score, seconds, beta = best
    print(f"\nbest dipy (beta={beta}): ARI {score:.3f} in {seconds:.2f} s; gmmseg: ARI "
          f"{ari(smooth.labels):.3f} in {t_gm:.2f} s ({seconds / t_gm:.1f}x faster)")


if __name__ == "__main__":
    main()
