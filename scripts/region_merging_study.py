"""Regions against people's segmentations: ``Segmentation.regions`` on BSDS photos.

gmmseg's labels are mixture components, each of which may be spread over
many disconnected pieces of a photo, while people draw connected regions.
``Segmentation.regions`` (:func:`gmmseg.postprocess.region_hierarchy`)
merges the pieces back into connected regions.  This script scores it on a
folder in BSDS format (see ``evaluate.py``) for ``docs/quality.md``:

1. ``gmmseg.segment(image, K0, features="lab,position")``;
2. ``seg.region_hierarchy(min_size=--min-size, boundary_weight=--alpha)``:
   pieces under ``--min-size`` pixels join a neighbour, every label is split
   into connected regions, and adjacent regions merge cheapest first by
   the log-likelihood lost when one Gaussian (of Lab colour) models both,
   times ``(1 + border gradient / mean gradient) ** alpha`` (up to
   2026-11-28: Ward's criterion on mean Lab colour times the same term);
3. one cut per target number of regions, or with ``--scales`` one cut per
   region scale (``RegionHierarchy.cut(scale=...)``, small regions under
   ``--min-share`` of the pixels then joined to a neighbour).

Each target count or scale is one setting; ODS picks the best per metric,
as ``evaluate.py`` does for K.  Usage::

    python scripts/region_merging_study.py --data /work/shared/bsds500-val \\
        --limit 50 --components 12 --components 16
    python scripts/region_merging_study.py --data /work/shared/bsds500-val \\
        --components 8 --scales 0.002,0.003,0.005,0.008,0.01,0.02,0.05,0.1 \\
        --min-share 0
"""

import argparse
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

import gmmseg
from gmmseg import metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import image_ids, load_pair  # noqa: E402

TARGETS = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30)


def study_image(job):
    data, image_id, components, min_size, alpha, scales, min_share = job
    image, truths = load_pair(data, image_id)
    t0 = time.perf_counter()
    seg = gmmseg.segment(image, components, features="lab,position")
    hierarchy = seg.region_hierarchy(min_size=min_size, boundary_weight=alpha)
    if scales:
        cuts = {s: hierarchy.cut(scale=s, min_share=min_share) for s in scales}
    else:
        cuts = {t: hierarchy.cut(t) for t in TARGETS}
    seconds = time.perf_counter() - t0
    return (components, min_size, alpha), {t: metrics.region_metrics(m, truths)
                                           for t, m in cuts.items()}, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--limit", type=int, help="first N images (sorted by id)")
    p.add_argument("--skip", type=int, default=0, help="leave out the first N images")
    p.add_argument("--components", type=int, action="append",
                   help="mixture components K0 (repeatable; default 12)")
    p.add_argument("--min-size", type=int, default=50)
    p.add_argument("--alpha", type=float, default=4.0,
                   help="exponent of the boundary term (0: colour alone)")
    p.add_argument("--scales", type=lambda t: [float(x) for x in t.split(",") if x],
                   help="cut at these region scales instead of numbers of regions")
    p.add_argument("--min-share", type=float, default=gmmseg.postprocess.REGION_MIN_SHARE,
                   help="with --scales: smallest region as a share of the pixels")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    ids = image_ids(args.data, args.limit, args.skip)
    variants = [(k, args.min_size, args.alpha) for k in (args.components or [12])]
    jobs = [(args.data, i, *v, args.scales, args.min_share) for v in variants for i in ids]
    with Pool(args.jobs) as pool:
        results = pool.map(study_image, jobs)
    print(f"{len(ids)} images; VoI in bits; mean over images (Covering pooled)")
    for variant in variants:
        rows = [(scores, s) for v, scores, s in results if v == variant]
        print(f"K0={variant[0]} min_size={variant[1]} alpha={variant[2]:g}: "
              f"{np.mean([s for _, s in rows]):.1f} s/img")
        for target in args.scales or TARGETS:
            vals = [scores[target] for scores, _ in rows]
            pri = np.mean([v["pri"] for v in vals])
            voi = np.mean([v["voi"] for v in vals])
            cov = sum(v["covered_pixels"] for v in vals) / sum(v["gt_pixels"] for v in vals)
            setting = f"scale {target:g}" if args.scales else f"{target:3d} regions"
            print(f"  {setting}: PRI {pri:.3f}  VoI {voi:.3f}  Cov {cov:.3f}")


if __name__ == "__main__":
    main()
