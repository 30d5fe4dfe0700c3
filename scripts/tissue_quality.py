"""Brain tissue classification on the MNI152 template: ``preset="t1"`` against references.

The ground truth is the template's own tissue maps: CSF = 255 - GM - WM, and
the argmax of (CSF, GM, WM) inside the brain (T1 > 0), as the README of the
samples folder says.  The best pair of intensity thresholds reaches a mean
Dice of 0.942 on the clean template (printed as the ceiling of any
intensity-only labelling).

Cases (the corruptions are held out: nothing was tuned on them):

* ``clean``: the template;
* ``bias``: times a smooth multiplicative field of +-25 % (Gaussian-smoothed
  noise, sigma 40 mm, scaled to 0.75..1.25 over the brain; field seed ``s``
  for every ``s`` of ``--seeds``, default 1);
* ``bias+noise``: that, plus Rician noise of 4 % of the white-matter
  intensity (noise seed ``s + 1``);
* ``2mm``: the template and its tissue maps averaged over the brain voxels
  of 2 x 2 x 2 blocks, the blocks at least half brain kept (more partial
  volume, 8x fewer voxels).

Methods: the plain 3-class mixture (``gmmseg.segment(image, 3)``, the brain
mask given), ``preset="t1"`` (bias field, partial volume, tissue prior) and,
if dipy is importable, dipy's ``TissueClassifierHMRF`` (beta 0.1, its
documented value, 10 iterations).  For each: mean Dice and Dice per class,
wall and CPU seconds, and the CSF / GM / WM volumes in mL (hard labels, and
for t1 the partial-volume-weighted ones) against the truth's (hard: the
argmax; PV: the sum of the probability maps).  ``L`` and ``R`` are the mean
Dice over each hemisphere (voxel x below / above the midline, x = 0 mm):
the method's settings were developed on the clean template and seed 1, so
the right hemisphere and the other seeds are held out.  With several seeds
a last line per case and method gives the mean and spread (sd) over them.
The header names the CPU, the cores, the BLAS and whether
``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` are set.

Usage::

    python scripts/tissue_quality.py [--cases clean,bias,bias+noise,2mm]
        [--methods mixture,t1,dipy] [--smoothing 1.0] [--seeds 1,3,5]

dipy is not a gmmseg dependency; install it apart (``pip install --target
/tmp/dipy_site dipy`` and ``PYTHONPATH=/tmp/dipy_site``).
"""

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import gmmseg
from gmmseg._system import machine_lines

SAMPLES = Path(os.environ.get("GMMSEG_SAMPLES", "/work/shared/samples")) / "mni152"
STEM = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def load():
    """The T1 image, the tissue probabilities (CSF, GM, WM) in [0, 1] and the brain mask."""
    t1 = gmmseg.read_image(SAMPLES / STEM.format("t1"))
    gm = gmmseg.read_image(SAMPLES / STEM.format("gm")).data[..., 0].astype(np.float32) / 255
    wm = gmmseg.read_image(SAMPLES / STEM.format("wm")).data[..., 0].astype(np.float32) / 255
    probs = np.stack([np.clip(1 - gm - wm, 0, 1), gm, wm])
    return t1, probs, t1.data[..., 0] > 0


def bias_field(mask, amplitude=0.25, sigma=40.0, seed=1):
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=mask.shape), sigma, mode="wrap")
    lo, hi = f[mask].min(), f[mask].max()
    return (1 + amplitude * (2 * (f - lo) / (hi - lo) - 1)).astype(np.float32)


def rician(x, sigma, seed=2):
    rng = np.random.default_rng(seed)
    return np.hypot(x + rng.normal(0, sigma, x.shape), rng.normal(0, sigma, x.shape))


def block_mean(a, k=2):
    shape = tuple(s // k for s in a.shape[-3:])
    a = a[..., :shape[0] * k, :shape[1] * k, :shape[2] * k]
    return a.reshape(a.shape[:-3] + (shape[0], k, shape[1], k, shape[2], k)).mean(
        axis=(-5, -3, -1))


def cases(t1, probs, mask, names, seeds=(1,)):
    """``(name, seed or None) -> (image, probabilities, mask)``, built when asked for."""
    data = t1.data[..., 0].astype(np.float32)
    truth_wm = np.median(data[mask & (probs.argmax(0) == 2)])
    for name in names:
        if name in ("bias", "bias+noise"):
            for seed in seeds:
                x = data * bias_field(mask, seed=seed)
                if name == "bias+noise":
                    x = rician(x, 0.04 * truth_wm, seed=seed + 1)
                yield (name, seed), (_image(t1, x), probs, mask)
        elif name == "clean":
            yield (name, None), (t1, probs, mask)
        elif name == "2mm":
            # Blocks at least half brain; each the mean of its brain voxels
            # (averaging in the zeros of the stripped background would add a
            # brain/background partial volume no scanner makes).
            share = block_mean(mask.astype(np.float32))
            small = block_mean(data) / np.maximum(share, 1e-6)
            inside = share >= 0.5
            img = gmmseg.Image(np.where(inside, small, 0)[..., None], np.ones(small.shape, bool),
                               spacing=(2.0, 2.0, 2.0), channels=("gray",))
            yield (name, None), (img, block_mean(probs) / np.maximum(share, 1e-6), inside)
        else:
            raise SystemExit(f"unknown case {name!r}")


def _image(t1, data):
    return dataclasses.replace(t1, data=data.astype(np.float32)[..., None], meta={})


def dice(labels, truth, mask):
    return [2 * np.sum((labels == k) & (truth == k) & mask)
            / (np.sum((labels == k) & mask) + np.sum((truth == k) & mask)) for k in range(3)]


def run(method, image, mask, smoothing):
    """Labels (0 CSF, 1 GM, 2 WM; -1 outside), PV volumes or None, wall s, CPU s."""
    t, c = time.perf_counter(), time.process_time()
    pv = None
    if method == "mixture":
        labels = gmmseg.segment(image, 3, mask=mask).labels
    elif method == "t1":
        seg = gmmseg.segment(image, preset="t1", mask=mask, smoothing=smoothing)
        labels = seg.labels
        pv = [row["pv_voxels"] for row in seg.stats()]
    else:
        from dipy.segment.tissue import TissueClassifierHMRF

        volume = np.where(mask, image.data[..., 0], 0).astype(np.float64)
        _, final, _ = TissueClassifierHMRF(verbose=False).classify(volume, 3, 0.1, max_iter=10)
        labels = np.where(mask, final.astype(np.int32) - 1, -1)   # dipy: 0 background
    return labels, pv, time.perf_counter() - t, time.process_time() - c


def hemispheres(image, mask):
    """Masks of the voxels left and right of x = 0 mm (by the affine; halves of axis 0 else)."""
    affine = (image.meta or {}).get("affine")
    n = mask.shape[0]
    if affine is not None:
        x = np.asarray(affine)[0, 0] * np.arange(n) + np.asarray(affine)[0, 3]
    else:
        x = np.arange(n) - (n - 1) / 2
    left = (x < 0)[:, None, None] & mask
    return left, mask & ~left


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="clean,bias,bias+noise,2mm")
    parser.add_argument("--methods", default="mixture,t1,dipy")
    parser.add_argument("--smoothing", type=float, default=None,
                        help="t1 prior strength (default: the preset's)")
    parser.add_argument("--seeds", default="1",
                        help="comma-separated seeds of the bias field (noise: seed + 1)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    if "dipy" in methods:
        try:
            import dipy  # noqa: F401
        except ImportError:
            print("dipy is not installed: its rows are skipped (pip install dipy)")
            methods.remove("dipy")
    smoothing = (gmmseg.presets.PRESETS["t1"].settings["smoothing"] if args.smoothing is None
                 else args.smoothing)
    t1, probs, mask = load()
    print("\n".join(machine_lines()))
    print(f"gmmseg {gmmseg.__version__}  t1 smoothing {smoothing}  seeds {seeds}")
    header = (f"{'case':11} {'seed':>4} {'method':8} {'Dice':>6} {'L':>6} {'R':>6} {'CSF':>6} "
              f"{'GM':>6} {'WM':>6} {'wall s':>7} {'CPU s':>7}   "
              "volumes mL CSF / GM / WM (hard; PV)")
    print(header)
    scores = {}
    for (name, seed), (image, p, m) in cases(t1, probs, mask, args.cases.split(","), seeds):
        truth = np.where(m, p.argmax(0), -1)
        voxel_ml = np.prod(image.spacing or (1.0, 1.0, 1.0)) / 1000
        hard = [np.sum(truth == k) * voxel_ml for k in range(3)]
        soft = [p[k][m].sum() * voxel_ml for k in range(3)]
        tag = f"{name:11} {seed if seed is not None else '':>4}"
        print(f"{tag} {'truth':8} " + " " * 60 + " / ".join(f"{v:.0f}" for v in hard) + "; "
              + " / ".join(f"{v:.0f}" for v in soft))
        left, right = hemispheres(image, m)
        for method in methods:
            labels, pv, wall, cpu = run(method, image, m, smoothing)
            if not np.any(labels[m] >= 0):
                print(f"{tag} {method:8} failed: no voxel labelled ({wall:.1f} s)")
                continue
            d = dice(labels, truth, m)
            halves = [np.mean(dice(labels, truth, h)) for h in (left, right)]
            scores.setdefault((name, method), []).append([np.mean(d), *halves])
            vols = " / ".join(f"{np.sum(labels == k) * voxel_ml:.0f}" for k in range(3))
            if pv is not None:
                vols += "; " + " / ".join(f"{v * voxel_ml:.0f}" for v in pv)
            print(f"{tag} {method:8} {np.mean(d):6.3f} {halves[0]:6.3f} {halves[1]:6.3f} "
                  f"{d[0]:6.3f} {d[1]:6.3f} {d[2]:6.3f} {wall:7.1f} {cpu:7.1f}   {vols}",
                  flush=True)
    for (name, method), rows in scores.items():
        if len(rows) > 1:
            mean, sd = np.mean(rows, axis=0), np.std(rows, axis=0, ddof=1)
            print(f"{name:11} {'all':>4} {method:8} " + " ".join(
                f"{a:.3f}+-{b:.3f}" for a, b in zip(mean, sd)) + "   (mean+-sd: Dice, L, R)")


if __name__ == "__main__":
    main()
