"""Would a ``ct`` or ``landcover`` preset help?  Physical references on the shared samples.

There is no human ground truth for the CT slice or the two multi-band
scenes, so each is judged against classes that physics defines:

* CT (``ct_small.dcm``, values in Hounsfield units): the standard windows,
  air < -500, fat -190..-30 and skeletal muscle / soft tissue -29..150
  (Kvist et al., Am J Clin Nutr 1988; Mitsiopoulos et al., J Appl Physiol
  1998), bone > 300.  Pixels outside every window are not scored.
* Land cover (``landsat7_etm_6band.tif``: Landsat 7 ETM+ bands 1-5 and 7,
  as the R package ``stars`` documents, so red = 3, green = 2, NIR = 4;
  ``rgbn_4band.tif``: R, G, B, NIR as the samples' README says): water
  where NDWI = (G - NIR) / (G + NIR) > 0 (McFeeters, IJRS 1996), vegetation
  where NDVI = (NIR - R) / (NIR + R) > 0.2, the rest other.  The files are
  uint8 digital numbers, not reflectances, so the thresholds are only
  approximate.

Score: every segment is given the reference class most of its scored
pixels have; *purity* is the share of scored pixels whose segment's class
is their own (1.0: no segment mixes two reference classes); *recall* per
class is the share of its pixels in segments given that class.

Usage::

    python scripts/preset_quality.py [--samples /work/shared/samples]
"""

import argparse
import functools
import os
from pathlib import Path

import numpy as np

import gmmseg
from gmmseg.tissue import classify_tissue

#: ``(name, low, high)`` in HU, inclusive; gaps between them are not scored.
HU_WINDOWS = (("air", -np.inf, -500), ("fat", -190, -30), ("soft tissue", -29, 150),
              ("bone", 300, np.inf))


def score(labels, reference, scored):
    """``(purity, recall per class)`` of ``labels`` against ``reference`` at ``scored``."""
    n_ref = int(reference[scored].max()) + 1
    agree, owner = 0, {}
    for s in np.unique(labels[scored]):
        counts = np.bincount(reference[scored & (labels == s)], minlength=n_ref)
        owner[s] = int(counts.argmax())
        agree += counts.max()
    recall = []
    for k in range(n_ref):
        mine = [s for s, o in owner.items() if o == k]
        here = scored & (reference == k)
        recall.append(float(np.mean(np.isin(labels[here], mine))) if here.any() else np.nan)
    return agree / scored.sum(), recall


def report(name, labels, reference, scored, classes):
    purity, recall = score(labels, reference, scored)
    print(f"  {name:40} purity {purity:.3f}  recall " + ", ".join(
        f"{c} {r:.2f}" for c, r in zip(classes, recall)))


def ct(samples):
    img = gmmseg.read_image(samples / "ct_small.dcm")
    hu = img.data[..., 0].astype(np.float64)
    reference = np.full(hu.shape, -1)
    for k, (_, lo, hi) in enumerate(HU_WINDOWS):
        reference[(hu >= lo) & (hu <= hi)] = k
    scored = reference >= 0
    classes = [w[0] for w in HU_WINDOWS]
    print(f"ct_small.dcm (Modality {img.meta.get('modality')}): {scored.mean():.0%} of the "
          "pixels in a window")
    report("auto default (K = 4, raw HU)", gmmseg.segment(img).labels, reference, scored,
           classes)
    report("K = 4, Potts prior 1.0", gmmseg.segment(img, 4, smoothing=1.0).labels, reference,
           scored, classes)
    shifted = hu - hu.min() + 1.0          # the tissue method's field needs positive values
    for pv in (False, True):
        for prior in (False, True):
            res = classify_tissue(shifted, n_classes=4, bias=False, partial_volume=pv,
                                  beta=1.0 if prior else 0.0, denoise=prior)
            report(f"tissue method K = 4, partial volume {pv}, prior {prior}", res.labels,
                   reference, scored, classes)


def normalised_difference(image, a, b):
    """``(band a - band b) / (band a + band b)`` of an Image, float32 (a custom feature)."""
    data = image.data.astype(np.float64)
    return ((data[..., a] - data[..., b])
            / np.maximum(data[..., a] + data[..., b], 1.0)).astype(np.float32)


def landcover(samples):
    for name, red, green, nir in (("landsat7_etm_6band.tif", 2, 1, 3),
                                  ("rgbn_4band.tif", 0, 1, 3)):
        img = gmmseg.read_image(samples / name)
        ndvi = functools.partial(normalised_difference, a=nir, b=red)
        ndwi = functools.partial(normalised_difference, a=green, b=nir)
        reference = np.where(ndwi(img) > 0, 0, np.where(ndvi(img) > 0.2, 1, 2))
        valid = img.valid if img.valid is not None else np.ones(reference.shape, bool)
        classes = ("water", "vegetation", "other")
        shares = [float(np.mean(reference[valid] == k)) for k in range(3)]
        print(f"{name}: water / vegetation / other " + " / ".join(f"{v:.0%}" for v in shares))
        for k in (4, 6):
            report(f"bands, K = {k}", gmmseg.segment(img, k).labels, reference, valid, classes)
            report(f"bands + NDVI + NDWI, K = {k}",
                   gmmseg.segment(img, k, features=["bands", ndvi, ndwi]).labels, reference,
                   valid, classes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path,
                        default=Path(os.environ.get("GMMSEG_SAMPLES", "/work/shared/samples")))
    args = parser.parse_args()
    ct(args.samples)
    landcover(args.samples)


if __name__ == "__main__":
    main()
