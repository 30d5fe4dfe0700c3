"""How often ``-k auto`` finds the number of segments of images whose segments are clear.

Images from ``tests/synthetic_segments.py``: 8-bit, 96 x 96, 2 to 6 blob
segments of clear colours, noise of 3 to 9 grey levels, one in three with a
gentle illumination gradient; as colour photos, grey images and 4-band
rasters, 30 seeded images each.  Each is given to ``gmmseg.select_k`` with
the defaults (the choice ``segment(image, "auto")`` makes); the script
prints every miss, the rate per kind, and the four-quadrant photo of issue
#15 through ``segment(..., "auto")``.  ``--criterion bic`` shows what BIC
alone would choose on the same features.

Usage::

    python scripts/check_select_k.py [--n 30] [--criterion auto|icl|bic] [--kinds rgb,gray,bands]
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import gmmseg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_segments import four_quadrants, photo_set


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="images per kind (default 30)")
    parser.add_argument("--criterion", default="auto", help="auto (default: the count where clear, else BIC), icl, bic or aic")
    parser.add_argument("--kinds", default="rgb,gray,bands", help="comma-separated kinds")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    total_right = total = 0
    for kind in args.kinds.split(","):
        right, t = 0, time.perf_counter()
        chosen = []
        for seed, k, image in photo_set(args.n, kind):
            result = gmmseg.select_k(image, criterion=args.criterion)
            chosen.append(result.n_components)
            if result.n_components == k:
                right += 1
            else:
                print(f"  {kind} seed {seed}: {k} segments, chose {result.n_components} "
                      f"(BIC {result.best_by('bic')[0]}, ICL {result.best_by('icl')[0]})")
        seconds = time.perf_counter() - t
        print(f"{kind:>5}: {right}/{args.n} right ({100 * right / args.n:.0f}%), mean chosen K "
              f"{sum(chosen) / len(chosen):.2f}, {seconds / args.n:.2f} s per image")
        total_right, total = total_right + right, total + args.n
    print(f"all: {total_right}/{total} right ({100 * total_right / total:.1f}%)")
    image, _ = four_quadrants()
    seg = gmmseg.segment(image, "auto", criterion=args.criterion)
    print(f"four quadrants (160 x 160): segment -k auto gives {seg.n_components} segments")


if __name__ == "__main__":
    main()
