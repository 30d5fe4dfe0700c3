"""Region benchmark: gmmseg and reference methods on a BSDS-format folder.

For every image, every method and every parameter setting, the segmentation
is scored against all the image's human segmentations with the BSDS region
metrics (:mod:`gmmseg.metrics`): Probabilistic Rand Index (PRI, higher is
better), Variation of Information (VoI, bits as in BSDS, lower is better)
and Segmentation Covering of the ground truth (higher is better).  Then, as
the BSDS benchmark does, per method and per metric (each metric picking its
own best setting):

* ODS: the one setting with the best score over the whole set;
* OIS: the best setting for each image, averaged.

PRI and VoI are plain means over images; Covering sums covered pixels and
ground-truth pixels over images (and annotators) before dividing, as BSDS's
``collect_eval_reg.m`` does, so images with more annotators weigh more.

Methods (``--methods``):

* ``gmmseg``: ``gmmseg.segment(image, K)`` with default settings, K in
  ``--k``, scored on what gmmseg writes by default: for colour photos the
  connected regions (``Segmentation.regions()``, cut at the default
  region scale), else the labels.
  ``--gmmseg-options 'features=lab,position:0.5;smoothing=1'``
  (repeatable) adds a method ``gmmseg[<options>]`` with those keyword
  arguments, over the same K; ``regions=None`` scores the labels,
  ``regions=N`` N regions, ``region_scale=S`` another scale.
  ``--k 2..10,auto`` also adds ``gmmseg -k auto`` (and
  ``gmmseg[<options>] -k auto``): K chosen per image by
  ``n_components="auto"``, a single setting.  ``--region-scales 0.002,0.005,0.02``
  adds ``gmmseg by region scale``: every K with every scale as a setting.
* ``tutorial-lab``, ``tutorial-labxy``: the tutorial pipeline, scikit-learn
  ``GaussianMixture(K, random_state=0)`` on skimage ``rgb2lab`` pixels (and
  on Lab plus x, y scaled to 0..100), fitted on every pixel, or on a random
  ``--tutorial-subsample`` of them (then every pixel is predicted).
* ``felzenszwalb``: ``skimage.segmentation.felzenszwalb``, sigma 0.8, a small
  grid of scale and min_size.
* ``slic``: ``skimage.segmentation.slic``, compactness 10, n_segments 4..20.

Usage::

    python scripts/evaluate.py --data /work/shared/bsds500-val --limit 50 \\
        --methods gmmseg,felzenszwalb,slic --k 2..10 --jobs 2 --out results.json

Label maps are scored as given (a tutorial segment or a gmmseg label may
be spread over many disconnected pieces; BSDS scores a ``segs`` file the
same way); ``--connected`` splits every method's segments into 8-connected
regions first.

The data folder holds ``images/<id>.jpg`` and ``groundTruth/<id>.mat``; it
is only read.  Per-image scores go to ``--out`` as JSON.
"""

import argparse
import json
import logging
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from multiprocessing import Pool
from pathlib import Path

import numpy as np

log = logging.getLogger("evaluate")

METHODS = ("gmmseg", "tutorial-lab", "tutorial-labxy", "felzenszwalb", "slic")
FELZENSZWALB_GRID = [{"scale": s, "sigma": 0.8, "min_size": m}
                     for m in (20, 100, 300) for s in (100, 300, 500, 1000, 2000)]
SLIC_GRID = [{"n_segments": n, "compactness": 10.0} for n in (4, 6, 8, 10, 12, 15, 20)]
METRICS = ("pri", "voi", "covering")


# --------------------------------------------------------------------------
# Data


def image_ids(data, limit=None, skip=0):
    """Image ids in sorted order: ``limit`` of them after the first ``skip``."""
    ids = sorted(p.stem for p in (Path(data) / "images").glob("*.jpg"))
    if not ids:
        raise SystemExit(f"error: no images/*.jpg under {data}")
    ids = ids[skip:]
    return ids[:limit] if limit else ids


def load_pair(data, image_id):
    """The RGB photo (uint8) and the list of annotators' label maps."""
    from scipy.io import loadmat
    from skimage.io import imread

    image = imread(Path(data) / "images" / f"{image_id}.jpg")
    mat = loadmat(Path(data) / "groundTruth" / f"{image_id}.mat")
    gts = [s["Segmentation"][0, 0].astype(np.int64) for s in mat["groundTruth"][0]]
    return image, gts


# --------------------------------------------------------------------------
# Methods: each maps (image, params) to a label map.


def run_gmmseg(image, params):
    """What gmmseg writes as its segmentation: the regions it saves by default
    for colour photos (``regions="auto"``), or the labels with
    ``regions=None``; ``regions=N`` and ``region_scale=S`` as in ``save``.

    One ``segment`` call per image and segment() settings serves every
    regions setting (the time is counted on the first).
    """
    import gmmseg
    from gmmseg import postprocess

    params = dict(params)
    regions = params.pop("regions", "auto")
    scale = params.pop("region_scale", postprocess.REGION_SCALE)
    cache = _WORKER.setdefault("segmentations", {})  # emptied for every image
    key = repr(sorted(params.items()))
    if key not in cache:
        cache[key] = gmmseg.segment(image, **params)
    seg = cache[key]
    _WORKER["n_components"] = seg.n_components  # recorded with the scores (-k auto: the choice)
    if regions in (None, "off") or regions == "auto" and not seg.image.is_photo:
        return seg.labels
    if isinstance(regions, int):
        return seg.regions(regions)
    return seg.regions(scale=scale)


def run_tutorial(image, params):
    """The scikit-learn tutorial pipeline: a GaussianMixture on Lab (+ x, y)."""
    from skimage.color import rgb2lab
    from sklearn.mixture import GaussianMixture

    h, w = image.shape[:2]
    X = rgb2lab(image).reshape(-1, 3)
    if params["position"]:
        yy, xx = np.mgrid[0:h, 0:w]
        X = np.column_stack([X, xx.ravel() * (100.0 / (w - 1)), yy.ravel() * (100.0 / (h - 1))])
    fit = X
    if params["subsample"] and params["subsample"] < len(X):
        rng = np.random.default_rng(0)
        fit = X[rng.choice(len(X), params["subsample"], replace=False)]
    gm = GaussianMixture(params["n_components"], random_state=0).fit(fit)
    return gm.predict(X).reshape(h, w)


def run_felzenszwalb(image, params):
    from skimage.segmentation import felzenszwalb

    return felzenszwalb(image, **params)


def run_slic(image, params):
    from skimage.segmentation import slic

    return slic(image, start_label=1, **params)


def parse_k(text):
    """'2..10', '2,4,8' or '2..10,auto' -> list of int (and "auto")."""
    ks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item == "auto":
            ks.append("auto")
        elif ".." in item:
            lo, hi = item.split("..")
            ks.extend(range(int(lo), int(hi) + 1))
        else:
            ks.append(int(item))
    return ks


def parse_options(text):
    """'features=lab,position:0.5;smoothing=1' -> {'features': ..., 'smoothing': 1}."""
    options = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        options[key.strip()] = _literal(value.strip())
    return options


def _literal(value):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(value, value)


def build_plan(args):
    """{method name: (function, [(setting name, params), ...])}."""
    plan = {}
    ks = [k for k in args.k if k != "auto"]
    gmmseg_variants = [("gmmseg", {})] if "gmmseg" in args.methods else []
    gmmseg_variants += [(f"gmmseg[{text}]", parse_options(text)) for text in args.gmmseg_options]
    for name, options in gmmseg_variants:
        if ks:
            plan[name] = (run_gmmseg, [(f"K={k}", {**options, "n_components": k}) for k in ks])
        if ks and args.region_scales and "regions" not in options:
            plan[f"{name} by region scale"] = (run_gmmseg, [
                (f"K={k},scale={scale:g}", {**options, "n_components": k, "regions": "scale",
                                            "region_scale": scale})
                for k in ks for scale in args.region_scales])
        if "auto" in args.k:  # a method of its own: one setting, chosen per image
            plan[f"{name} -k auto"] = (run_gmmseg, [("K=auto", {**options,
                                                                "n_components": "auto"})])
    for name, position in (("tutorial-lab", False), ("tutorial-labxy", True)):
        if name in args.methods and ks:
            plan[name] = (run_tutorial, [(f"K={k}", {"n_components": k, "position": position,
                                                     "subsample": args.tutorial_subsample})
                                         for k in ks])
    if "felzenszwalb" in args.methods:
        plan["felzenszwalb"] = (run_felzenszwalb, [
            (f"scale={p['scale']},min_size={p['min_size']}", p) for p in FELZENSZWALB_GRID])
    if "slic" in args.methods:
        plan["slic"] = (run_slic, [(f"n_segments={p['n_segments']}", p) for p in SLIC_GRID])
    return plan


# --------------------------------------------------------------------------
# Per image (in a worker process)

_WORKER = {}


def connected_regions(labels):
    """Split every label into its 8-connected components (labels 1..n)."""
    from scipy import ndimage

    out = np.zeros(labels.shape, np.int64)
    n = 0
    for value in np.unique(labels):
        comp, k = ndimage.label(labels == value, structure=np.ones((3, 3)))
        out[comp > 0] = comp[comp > 0] + n
        n += k
    return out


def _init_worker(data, plan, connected=False):
    try:   # one BLAS/OpenMP thread per worker: the workers are the parallelism
        from threadpoolctl import threadpool_limits
        _WORKER["limits"] = threadpool_limits(1)
    except ImportError:
        pass
    _WORKER.update(data=data, plan=plan, connected=connected)


def evaluate_image(image_id):
    from gmmseg.metrics import region_metrics

    image, gts = load_pair(_WORKER["data"], image_id)
    _WORKER["segmentations"] = {}
    out = {"n_annotators": len(gts), "methods": {}}
    for method, (fn, settings) in _WORKER["plan"].items():
        scores = {}
        for name, params in settings:
            t = time.perf_counter()
            _WORKER.pop("n_components", None)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    labels = fn(image, params)
                    if _WORKER["connected"]:
                        labels = connected_regions(labels)
            except Exception as err:  # noqa: BLE001 -- recorded per setting and reported
                scores[name] = {"error": f"{type(err).__name__}: {err}"}
                continue
            seconds = time.perf_counter() - t
            m = region_metrics(labels, gts)
            m["seconds"] = round(seconds, 4)
            if "n_components" in _WORKER:
                m["n_components"] = _WORKER["n_components"]
            scores[name] = m
        out["methods"][method] = scores
    return image_id, out


# --------------------------------------------------------------------------
# Aggregation


def summarize(per_image, method, settings):
    """ODS and OIS of each metric for one method, with the chosen settings."""
    ids = list(per_image)
    names = [name for name, _ in settings]
    shape = (len(names), len(ids))
    pri, voi, covered, gt_pixels = (np.full(shape, np.nan) for _ in range(4))
    errors = 0
    for j, image_id in enumerate(ids):
        for i, name in enumerate(names):
            s = per_image[image_id]["methods"][method][name]
            if "error" in s:
                errors += 1
                continue
            pri[i, j], voi[i, j] = s["pri"], s["voi"]
            covered[i, j], gt_pixels[i, j] = s["covered_pixels"], s["gt_pixels"]
    # A setting that failed on an image is scored as the worst possible there.
    pri = np.nan_to_num(pri, nan=0.0)
    voi = np.nan_to_num(voi, nan=np.inf)
    weight = np.nanmax(gt_pixels, axis=0)          # the image's annotator pixels
    covered = np.nan_to_num(covered, nan=0.0)
    cov = covered / weight

    ods_pri, ods_voi = pri.mean(axis=1), voi.mean(axis=1)
    ods_cov = covered.sum(axis=1) / weight.sum()
    best = {"pri": int(np.argmax(ods_pri)), "voi": int(np.argmin(ods_voi)),
            "covering": int(np.argmax(ods_cov))}
    return {
        "ods": {"pri": float(ods_pri[best["pri"]]), "voi": float(ods_voi[best["voi"]]),
                "covering": float(ods_cov[best["covering"]])},
        "ods_setting": {m: names[i] for m, i in best.items()},
        "ois": {"pri": float(pri.max(axis=0).mean()), "voi": float(voi.min(axis=0).mean()),
                "covering": float((cov.max(axis=0) * weight).sum() / weight.sum())},
        "per_setting": {name: {"pri": float(ods_pri[i]), "voi": float(ods_voi[i]),
                               "covering": float(ods_cov[i])} for i, name in enumerate(names)},
        "errors": errors,
        "mean_n_components": _mean_n_components(per_image, method, names),
        "mean_seconds_per_image": float(sum(
            s.get("seconds", 0.0) for r in per_image.values()
            for s in r["methods"][method].values()) / len(ids)),
    }


def _mean_n_components(per_image, method, names):
    """Mean K over images of a one-setting method (``-k auto``: the mean chosen K), else None."""
    if len(names) != 1:
        return None
    ks = [r["methods"][method][names[0]].get("n_components") for r in per_image.values()]
    ks = [k for k in ks if k is not None]
    return float(np.mean(ks)) if ks else None


def format_table(summary):
    width = max(len("method"), *map(len, summary))
    header = (f"{'method':<{width}} {'PRI ODS':>8} {'PRI OIS':>8} {'VoI ODS':>8} {'VoI OIS':>8} "
              f"{'Cov ODS':>8} {'Cov OIS':>8} {'s/img':>7}  ODS settings (PRI | VoI | Cov)")
    lines = [header]
    for method, s in summary.items():
        o, b, c = s["ods"], s["ois"], s["ods_setting"]
        lines.append(
            f"{method:<{width}} {o['pri']:8.3f} {b['pri']:8.3f} {o['voi']:8.3f} {b['voi']:8.3f} "
            f"{o['covering']:8.3f} {b['covering']:8.3f} {s['mean_seconds_per_image']:7.1f}  "
            f"{c['pri']} | {c['voi']} | {c['covering']}"
            + (f"  (mean K {s['mean_n_components']:.2f})"
               if s.get("mean_n_components") is not None else "")
            + (f"  [{s['errors']} failed runs]" if s["errors"] else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path,
                   help="folder with images/<id>.jpg and groundTruth/<id>.mat")
    p.add_argument("--limit", type=int, help="first N images (sorted by id)")
    p.add_argument("--skip", type=int, default=0,
                   help="leave out the first N images (e.g. --skip 50 --limit 50 for a "
                        "held-out half)")
    p.add_argument("--out", type=Path, help="write per-image results and the summary as JSON")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--k", type=parse_k, default=parse_k("2..10"),
                   help="K values for gmmseg and the tutorial pipelines: '2..10' or '2,4,8'; "
                        "'auto' adds a method 'gmmseg -k auto' (K chosen per image)")
    p.add_argument("--gmmseg-options", action="append", default=[], metavar="OPTS",
                   help="extra gmmseg method with these segment() keywords, "
                        "'key=value;key=value' (repeatable)")
    p.add_argument("--region-scales", type=lambda t: [float(x) for x in t.split(",") if x],
                   default=[], metavar="S1,S2,...",
                   help="also score each gmmseg method's regions cut at these scales "
                        "(settings K x scale; method '<name> by region scale')")
    p.add_argument("--tutorial-subsample", type=int, default=None, metavar="N",
                   help="fit the tutorial mixtures on N random pixels (default: all pixels)")
    p.add_argument("--connected", action="store_true",
                   help="score connected regions: split every label of every method into "
                        "its 8-connected components first (default: score labels as given)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes over images (default: all cores)")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        p.error(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
    for text in args.gmmseg_options:
        try:
            parse_options(text)
        except argparse.ArgumentTypeError as err:
            p.error(f"--gmmseg-options: {err}")
    return args


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("gmmseg").setLevel(logging.WARNING)   # one line per segment() call
    args = parse_args(argv)
    ids = image_ids(args.data, args.limit, args.skip)
    plan = build_plan(args)
    if not plan:
        raise SystemExit("error: nothing to run (empty --methods and no --gmmseg-options)")
    if any(m.startswith("tutorial") for m in plan):
        log.info("tutorial pipelines fitted on %s",
                 f"{args.tutorial_subsample} random pixels per image" if args.tutorial_subsample
                 else "all pixels (slow; --tutorial-subsample N for a faster variant)")
    log.info("%d images, %d jobs, methods: %s", len(ids), args.jobs, ", ".join(plan))

    t0 = time.perf_counter()
    per_image = {}
    if args.jobs > 1:
        with Pool(args.jobs, initializer=_init_worker, initargs=(args.data, plan, args.connected)) as pool:
            for image_id, result in pool.imap_unordered(evaluate_image, ids):
                per_image[image_id] = result
                log.info("  %s done (%d/%d)", image_id, len(per_image), len(ids))
    else:
        _init_worker(args.data, plan, args.connected)
        for image_id in ids:
            per_image[image_id] = evaluate_image(image_id)[1]
            log.info("  %s done (%d/%d)", image_id, len(per_image), len(ids))
    per_image = {i: per_image[i] for i in ids}
    wall = time.perf_counter() - t0

    summary = {method: summarize(per_image, method, settings)
               for method, (_, settings) in plan.items()}
    print(f"\n{len(ids)} images from {args.data}; VoI in bits (BSDS convention); "
          f"{'connected regions' if args.connected else 'labels as given'}; "
          f"wall {wall:.0f} s with {args.jobs} jobs")
    print(format_table(summary))

    if args.out:
        record = {
            "meta": {
                "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                            "jobs": args.jobs},
                "n_images": len(ids), "wall_seconds": round(wall, 1),
                "voi_units": "bits",
                "connected_regions": args.connected,
                "tutorial_subsample": args.tutorial_subsample,
                "settings": {m: {name: {k: v for k, v in params.items()}
                                 for name, params in settings}
                             for m, (_, settings) in plan.items()},
            },
            "summary": summary,
            "images": per_image,
        }
        args.out.write_text(json.dumps(record, indent=1, default=str))
        log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
