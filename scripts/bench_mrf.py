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

First, the cost of the prior in 2-D: ``gmmseg.segment`` of a 1024 x 1024
photo (``sample_images/astronaut.png`` upscaled, K = 4, default features)
with and without ``smoothing``, best of three runs each, and their ratio.

Usage::

    python scripts/bench_mrf.py [--shape 64 128 128] [--noise 0.6]
"""

import argparse
import os
import time
from pathlib import Path

import cv2
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


def photo_cost(beta, repeats=3):
    """Seconds of segment() on a 1024 x 1024 photo without and with the prior."""
    path = Path(__file__).resolve().parents[1] / "sample_images" / "astronaut.png"
    rgb = cv2.resize(cv2.imread(str(path))[..., ::-1], (1024, 1024),
                     interpolation=cv2.INTER_CUBIC)
    best = {}
    for _ in range(repeats):
        for smoothing in (0.0, beta):
            _, seconds = timed(lambda: gmmseg.segment(rgb, 4, smoothing=smoothing))
            best[smoothing] = min(best.get(smoothing, np.inf), seconds)
    return best[0.0], best[beta]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128))
    parser.add_argument("--noise", type=float, default=0.6,
                        help="noise standard deviation relative to the class spacing")
    parser.add_argument("--beta", type=float, default=1.0, help="gmmseg smoothing")
    parser.add_argument("--dipy-beta", type=float, nargs="+", default=(0.1, 0.3, 1.0),
                        help="dipy betas to try (its documentation uses 0.1); each is shown")
    args = parser.parse_args()
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"cores: {os.cpu_count()}  env: {env}  gmmseg {gmmseg.__version__}")
    plain_s, smooth_s = photo_cost(args.beta)
    print(f"1024 x 1024 photo, K = 4: {plain_s:.2f} s plain, {smooth_s:.2f} s with "
          f"smoothing={args.beta} ({smooth_s / plain_s:.1f}x)\n")
    try:
        from dipy.segment.tissue import TissueClassifierHMRF
    except ImportError:
        raise SystemExit("the 3-D comparison needs dipy: pip install dipy") from None
    import dipy

    print(f"dipy {dipy.__version__}")
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
