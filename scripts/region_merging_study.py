"""Study (not part of the package): merge mixture regions into connected segments.

gmmseg's labels are mixture components, each of which may be spread over
many disconnected pieces of a photo, while people draw connected regions.
This script measures one way to turn the first into the second, on a folder
in BSDS format (see ``evaluate.py``), for ``docs/quality.md`` section 4:

1. ``gmmseg.segment(image, K0, features="lab,position")``;
2. labelled pieces under ``--min-size`` pixels merged into a neighbour
   (``gmmseg.postprocess.remove_small_regions``), then every label split
   into its 8-connected regions;
3. adjacent regions merged greedily, cheapest first, down to each target
   count, by Ward's criterion on the regions' mean Lab colour,
   ``n_a n_b / (n_a + n_b) * |mean_a - mean_b|^2``, times
   ``(1 + mean Lab gradient along the shared boundary) ** alpha``.

Each target count is one setting; ODS picks the best count per metric, as
``evaluate.py`` does for K.  Usage::

    python scripts/region_merging_study.py --data /work/shared/bsds500-val \\
        --limit 50 --components 12 --components 16
"""

import argparse
import heapq
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

import gmmseg
from gmmseg import metrics, postprocess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import connected_regions, image_ids, load_pair  # noqa: E402

TARGETS = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30)


def boundary_pairs(regions, edge):
    """Adjacent region pairs (4-neighbours) with boundary length and summed edge strength."""
    n = int(regions.max()) + 1
    pairs = []
    for a, b, g in ((regions[:, :-1], regions[:, 1:], np.maximum(edge[:, :-1], edge[:, 1:])),
                    (regions[:-1], regions[1:], np.maximum(edge[:-1], edge[1:]))):
        differ = a != b
        lo, hi = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
        pairs.append((lo.astype(np.int64) * n + hi, g[differ]))
    keys = np.concatenate([k for k, _ in pairs])
    strength = np.concatenate([g for _, g in pairs])
    unique, inverse = np.unique(keys, return_inverse=True)
    length = np.bincount(inverse).astype(float)
    total = np.bincount(inverse, strength)
    return [(int(k // n), int(k % n), l, s) for k, l, s in zip(unique, length, total)]


def merge(regions, colour, edge, targets, alpha):
    """{target count: region map} by greedy Ward merging of adjacent regions."""
    n = int(regions.max()) + 1
    flat = regions.ravel()
    count = np.bincount(flat, minlength=n).astype(float)
    sums = np.stack([np.bincount(flat, colour[..., c].ravel(), minlength=n)
                     for c in range(colour.shape[-1])], 1)
    neighbours = {}
    for a, b, length, strength in boundary_pairs(regions, edge):
        neighbours.setdefault(a, {})[b] = [length, strength]
        neighbours.setdefault(b, {})[a] = neighbours[a][b]

    def cost(a, b):
        ward = count[a] * count[b] / (count[a] + count[b]) * np.sum(
            (sums[a] / count[a] - sums[b] / count[b]) ** 2)
        length, strength = neighbours[a][b]
        return ward * (1.0 + strength / length) ** alpha

    version = np.zeros(n, int)
    heap = [(cost(a, b), a, b, 0, 0) for a in neighbours for b in neighbours[a] if a < b]
    heapq.heapify(heap)
    parent = np.arange(n)
    alive = n
    todo = sorted(targets, reverse=True)
    out = {}

    def snapshot():
        root = parent.copy()
        while True:  # path halving until every entry points at a root
            nxt = root[root]
            if np.array_equal(nxt, root):
                return root[regions]
            root = nxt

    while todo and todo[0] >= alive:
        out[todo.pop(0)] = snapshot()
    while heap and todo:
        _, a, b, va, vb = heapq.heappop(heap)
        if parent[a] != a or parent[b] != b or version[a] != va or version[b] != vb:
            continue
        parent[b] = a
        count[a] += count[b]
        sums[a] += sums[b]
        for c, (length, strength) in neighbours.pop(b).items():
            if c == a:
                continue
            del neighbours[c][b]
            if c in neighbours[a]:
                neighbours[a][c][0] += length
                neighbours[a][c][1] += strength
            else:
                neighbours[a][c] = [length, strength]
            neighbours[c][a] = neighbours[a][c]
        del neighbours[a][b]
        version[a] += 1
        for c in neighbours[a]:
            x, y = min(a, c), max(a, c)
            heapq.heappush(heap, (cost(x, y), x, y, version[x], version[y]))
        alive -= 1
        while todo and todo[0] >= alive:
            out[todo.pop(0)] = snapshot()
    return out


def study_image(job):
    data, image_id, components, min_size, alpha = job
    image, truths = load_pair(data, image_id)
    t0 = time.perf_counter()
    labels = gmmseg.segment(image, components, features="lab,position").labels
    if min_size:
        labels = postprocess.remove_small_regions(labels, min_size)
    _, regions = np.unique(connected_regions(labels), return_inverse=True)
    regions = regions.reshape(labels.shape)
    lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    smooth = cv2.GaussianBlur(lab, (0, 0), 1.0)
    edge = np.sqrt(sum(cv2.Sobel(smooth[..., c], cv2.CV_32F, 1, 0) ** 2
                       + cv2.Sobel(smooth[..., c], cv2.CV_32F, 0, 1) ** 2 for c in range(3))) / 8
    merged = merge(regions, lab, edge, TARGETS, alpha)
    seconds = time.perf_counter() - t0
    return (components, min_size, alpha), {t: metrics.region_metrics(m, truths)
                                           for t, m in merged.items()}, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--limit", type=int)
    p.add_argument("--components", type=int, action="append",
                   help="mixture components K0 (repeatable; default 12)")
    p.add_argument("--min-size", type=int, default=50)
    p.add_argument("--alpha", type=float, default=1.0,
                   help="exponent of the boundary term (0: Ward on colour alone)")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    ids = image_ids(args.data, args.limit)
    variants = [(k, args.min_size, args.alpha) for k in (args.components or [12])]
    jobs = [(args.data, i, *v) for v in variants for i in ids]
    with Pool(args.jobs) as pool:
        results = pool.map(study_image, jobs)
    print(f"{len(ids)} images; VoI in bits; mean over images (Covering pooled)")
    for variant in variants:
        rows = [(scores, s) for v, scores, s in results if v == variant]
        print(f"K0={variant[0]} min_size={variant[1]} alpha={variant[2]:g}: "
              f"{np.mean([s for _, s in rows]):.1f} s/img")
        for target in TARGETS:
            vals = [scores[target] for scores, _ in rows if target in scores]
            if len(vals) < len(rows):
                continue  # some image had fewer regions than this target
            pri = np.mean([v["pri"] for v in vals])
            voi = np.mean([v["voi"] for v in vals])
            cov = sum(v["covered_pixels"] for v in vals) / sum(v["gt_pixels"] for v in vals)
            print(f"  {target:3d} regions: PRI {pri:.3f}  VoI {voi:.3f}  Cov {cov:.3f}")


if __name__ == "__main__":
    main()
