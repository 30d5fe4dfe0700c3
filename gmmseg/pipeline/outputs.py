"""The files a segmentation is saved as: their names, their contents, the report.

The one place output file names are made (:func:`output_paths`, and
:func:`find_output` for ``batch --resume``), and the one writer of a
complete set (:func:`write_outputs`: every file to a temporary name and
renamed, the report last, nothing left behind on failure).  Knows nothing of
how a segmentation is computed; it reads a :class:`Segmentation`'s maps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import postprocess
from ..errors import OutputExistsError
from ..io import (
    label_table_suffixes,
    pixel_size,
    result_suffix,
    write_json,
    write_label_table,
    write_png,
    write_result_map,
)
from . import figures

logger = logging.getLogger(__name__)

#: Threads that encode PNG files while a save draws the next picture: one
#: per core of the machines this is measured on; more only wait.
_ENCODE_THREADS = 2

#: Display range of the anomaly heat map: these percentiles of -log p.
_ANOMALY_PERCENTILES = (1.0, 99.5)

#: Every kind of output, in the order they are listed: the tag in its file
#: name and its suffix (``"labels"`` / ``"float"``: the input's label or
#: float-map format, see :func:`gmmseg.io.result_suffix`; ``"table:S"``: a
#: file that names and colours the map's labels, written with the map when
#: the input's format has one with suffix S, see
#: :func:`gmmseg.io.label_table_suffixes`).
OUTPUT_KINDS = {
    "labels": ("labels", "labels"),
    "labels_itksnap": ("labels", "table:.txt"),
    "labels_lut": ("labels", "table:.lut"),
    "labels_aux": ("labels", "table:.tif.aux.xml"),
    "overlay": ("overlay", ".png"),
    "report": ("report", ".json"),
    "proba": ("proba", "float"),
    "log_likelihood": ("loglik", "float"),
    "uncertainty": ("uncertainty", ".png"),
    "uncertainty_map": ("uncertainty", "float"),
    "anomaly": ("anomaly", ".png"),
    "anomaly_mask": ("anomaly_mask", "labels"),
    "regions": ("regions", "labels"),
    "regions_itksnap": ("regions", "table:.txt"),
    "regions_lut": ("regions", "table:.lut"),
    "regions_aux": ("regions", "table:.tif.aux.xml"),
    "regions_overlay": ("regions_overlay", ".png"),
    # Maps of tissue classification (gmmseg.pipeline.tissue), as FAST writes them.
    "pve": ("pve", "float"),
    "bias": ("bias", "float"),
    "restored": ("restored", "float"),
}
#: Kinds written only when the segmentation has them (``seg.extra_maps``).
EXTRA_KINDS = ("pve", "bias", "restored")

# The suffixes a result map of each format kind can have (see result_suffix).
_MAP_SUFFIXES = {"labels": (".png", ".tif", ".nii.gz"), "float": (".tif", ".nii.gz")}


def output_paths(image, out_dir, stem, *, proba=False, log_likelihood=False,
                 uncertainty=False, anomaly=False, anomaly_mask=False, regions=False,
                 extra=()):
    """The files a save of ``image``'s segmentation writes with these options, by kind.

    ``labels``, ``overlay``, ``report`` always; ``proba``,
    ``log_likelihood`` (also with ``anomaly``), ``uncertainty`` (heat map)
    and ``uncertainty_map`` (float), ``anomaly`` (heat map),
    ``anomaly_mask`` and ``regions`` (with ``regions_overlay``) on request;
    the kinds in ``extra`` (of :data:`EXTRA_KINDS`) for segmentations that
    have them.  Label and region maps of NIfTI / DICOM inputs come with
    ``*_itksnap`` and ``*_lut`` files, of rasters with ``*_aux`` (see
    :func:`gmmseg.io.label_table_suffixes`).
    """
    wanted = {
        "labels": True, "overlay": True, "report": True, "proba": proba,
        "log_likelihood": log_likelihood or anomaly, "uncertainty": uncertainty,
        "uncertainty_map": uncertainty, "anomaly": anomaly, "anomaly_mask": anomaly_mask,
        "regions": regions, "regions_overlay": regions,
        **{kind: kind in extra for kind in EXTRA_KINDS},
    }
    tables = label_table_suffixes(image)
    out_dir = Path(out_dir)
    paths = {}
    for kind, (tag, suffix) in OUTPUT_KINDS.items():
        if suffix.startswith("table:"):
            suffix = suffix[len("table:"):]
            if not (wanted[tag] and suffix in tables):
                continue
        elif not wanted[kind]:
            continue
        elif suffix in ("labels", "float"):
            suffix = result_suffix(image, suffix)
        paths[kind] = out_dir / f"{stem}_{tag}{suffix}"
    return paths


def find_output(folder, stem, kind):
    """The existing file of output ``kind`` for ``stem`` in ``folder``, or None.

    A map kind may have any of its formats' suffixes (``.png``, ``.tif``,
    ``.nii.gz``); the side files beside it (``.txt``, ``.lut``,
    ``.tif.aux.xml``) are other kinds.
    """
    tag, suffix = OUTPUT_KINDS[kind]
    if suffix.startswith("table:"):
        suffixes = (suffix[len("table:"):],)
    else:
        suffixes = _MAP_SUFFIXES.get(suffix, (suffix,))
    for suffix in suffixes:
        path = Path(folder) / f"{stem}_{tag}{suffix}"
        if path.is_file():
            return path
    return None


def region_request(image, regions, region_scale):
    """``save``'s ``regions`` option as ``(n_regions, scale)``, or None for no regions."""
    mode = postprocess.check_region_mode(regions)
    if mode is None:
        return None
    if isinstance(mode, str):
        region_scale = postprocess.check_region_scale(region_scale, "region_scale")
        if mode == "auto" and not image.is_photo:
            return None
        return None, region_scale
    return mode, None


def regions_request(regions, region_scale):
    """``save``'s region options as its report records them: ``(requested, scale)``.

    ``batch --resume`` compares this with a report to tell whether the
    regions on disk are the ones asked for; None when no regions are asked for.
    """
    mode = postprocess.check_region_mode(regions)
    if mode is None:
        return None
    if isinstance(mode, str):
        return mode, float(region_scale)
    return mode, None


def _regions_entry(request, region_map):
    """The report's ``"regions"``: what was asked for and, if written, what came out."""
    requested, scale = request
    entry = {"requested": requested, "scale": scale, "n_regions": None}
    if region_map is not None:
        pixels = postprocess.pixel_counts(region_map)
        entry.update(n_regions=len(pixels), min_size=postprocess.REGION_MIN_SIZE,
                     boundary_weight=postprocess.REGION_BOUNDARY_WEIGHT,
                     ridge=postprocess.REGION_RIDGE,
                     min_share=(postprocess.REGION_MIN_SHARE if isinstance(requested, str)
                                else None),
                     pixels=pixels.tolist())
    return entry


def features_entry(extractor):
    """The report's ``features``: what the pixels were turned into."""
    return {"spec": extractor.spec_string, "names": list(extractor.names_),
            "n_features": int(extractor.n_features_), "standardize": extractor.standardize,
            "pca": extractor.pca}


def model_entry(model, fit_samples, random_state, pretrained=False):
    """The report's ``model``: the mixture and how it was fitted."""
    return {
        "n_components": int(model.n_components),
        "covariance_type": model.covariance_type,
        "weights": model.weights_.tolist(),
        "means": model.means_.tolist(),
        "covariances": model.covariances_.tolist(),
        "converged": bool(getattr(model, "converged_", True)),
        "n_iter": int(getattr(model, "n_iter_", 0)),
        "fit_samples": fit_samples,
        "fit_lower_bound": float(getattr(model, "lower_bound_", float("nan"))),
        "reg_covar": float(getattr(model, "reg_covar_", model.reg_covar)),
        "random_state": random_state,
        "pretrained": pretrained,
    }


def fit_entries(model, mean_ll, n_valid):
    """The report's mean log-likelihood a pixel and BIC and AIC over the ``n_valid`` pixels."""
    n_params = model._n_parameters()
    return {"mean_log_likelihood": mean_ll,
            "bic": -2.0 * mean_ll * n_valid + n_params * math.log(max(n_valid, 1)),
            "aic": -2.0 * mean_ll * n_valid + 2.0 * n_params}


def segmentation_report(seg, segments, *, uncertainty, anomaly_quantile, anomaly_threshold):
    """:meth:`Segmentation.report` with the per-segment statistics already worked out."""
    from .. import __version__

    n_valid = int(seg.info["n_valid"])
    img = seg.image
    out = {
        "gmmseg_version": __version__,
        "input": {
            "path": str(img.path) if img.path else None,
            "shape": list(img.data.shape),
            "dtype": str(img.data.dtype),
            "channels": list(img.channels),
            "spacing": list(img.spacing) if img.spacing else None,
            "pixel_size": pixel_size(img),
            "valid_pixels": n_valid,
            "valid_share": n_valid / max(1, math.prod(img.spatial_shape)),
        },
        "features": features_entry(seg.features),
        "model": model_entry(seg.model, seg.info.get("fit_samples"),
                             seg.info.get("random_state"), seg.info.get("pretrained", False)),
        **fit_entries(seg.model, float(seg.info["mean_log_likelihood"]), n_valid),
        "min_region_size": seg.info.get("min_region_size", 0),
        "smoothing": seg.info.get("smoothing", 0.0),
        "smoothing_iterations": seg.info.get("smoothing_iterations", 0),
        "segments": segments,
        "timings": dict(seg.info.get("timings", {})),
    }
    for entry in ("model_selection", "preset", "tissue"):
        if seg.info.get(entry) is not None:
            out[entry] = seg.info[entry]
    if uncertainty:
        values = seg.uncertainty[seg.valid].astype(np.float64)
        out["uncertainty"] = {
            "measure": "normalized posterior entropy",
            "mean": float(values.mean()),
            "median": float(np.median(values)),
        }
    if anomaly_quantile is not None or anomaly_threshold is not None:
        limit = seg.anomaly_threshold(anomaly_quantile, threshold=anomaly_threshold)
        n_anomalous = int(np.count_nonzero(seg.anomaly_mask(threshold=limit)))
        out["anomaly"] = {
            "quantile": None if anomaly_quantile is None else float(anomaly_quantile),
            "threshold": None if anomaly_threshold is None else float(anomaly_threshold),
            "log_likelihood_threshold": limit,
            "pixels": n_anomalous,
            "share": n_anomalous / max(n_valid, 1),
        }
    return out


def _heat_maps(seg, uncertainty, anomaly):
    """The heat-map pictures asked for, and the report's ``"heat_maps"`` entry on them."""
    pictures, entry = {}, {}
    if uncertainty:
        label = figures.UNCERTAINTY_LABEL.format(k=seg.n_components)
        pictures["uncertainty"] = figures.heat_picture(
            seg.image, seg.uncertainty, seg.valid, value_range=(0.0, 1.0), cmap="viridis",
            label=label)
        entry["uncertainty"] = {"quantity": label, "value_range": [0.0, 1.0],
                                "colormap": "viridis"}
    if anomaly:
        values = -seg.log_likelihood
        value_range = postprocess.percentile_range(values, seg.valid,
                                                   percentiles=_ANOMALY_PERCENTILES)
        low, high = _ANOMALY_PERCENTILES
        label = figures.ANOMALY_LABEL.format(low=low, high=high)
        pictures["anomaly"] = figures.heat_picture(
            seg.image, values, seg.valid, value_range=value_range, cmap="magma", label=label)
        entry["anomaly"] = {"quantity": label, "value_range": list(value_range),
                            "percentiles": list(_ANOMALY_PERCENTILES), "colormap": "magma"}
    return pictures, entry


def _label_tables(seg, paths, segments, region_map):
    """Write the files that name and colour the labels (and regions) for viewers."""
    medical = "labels_itksnap" in paths
    names = figures.segment_names(seg, invalid_as_zero=medical)
    colors = postprocess.segment_colors(seg.n_components)
    size = pixel_size(seg.image)
    columns = {"Pixels": [s["pixels"] for s in segments]}
    if size is not None:
        columns[f"{size['measure'].capitalize()} ({size['units']})"] = [
            s[size["measure"]] for s in segments]
        if "hectares" in segments[0]:
            columns["Hectares"] = [s["hectares"] for s in segments]
    tables = [("labels", names, colors, columns)]
    if region_map is not None:
        counts = postprocess.pixel_counts(region_map)
        tables.append(("regions", [f"region {r}" for r in range(len(counts))],
                       postprocess.segment_colors(len(counts)),
                       {"Pixels": [int(c) for c in counts]}))
    for tag, names, colors, columns in tables:
        for kind in (f"{tag}_itksnap", f"{tag}_lut", f"{tag}_aux"):
            if kind in paths:
                yield kind, names, colors, columns


def _write_one(written, path, overwrite, writer, *args, **kwargs):
    """``writer(path, *args, overwrite=overwrite, **kwargs)``; note ``path`` in ``written``."""
    writer(path, *args, overwrite=overwrite, **kwargs)
    written.append(path)


def _stale_outputs(image, paths, out_dir, stem):
    """Files the report being replaced listed and this save will not write.

    They belong to an earlier run's set (say, regions, before a run
    without them) and would no longer match the new labels.  Only names
    that a save of this image under this stem can write count.
    """
    report = paths["report"]
    try:
        listed = json.loads(report.read_text()).get("outputs")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(listed, dict):
        return []
    every = output_paths(image, out_dir, stem, proba=True, log_likelihood=True,
                         uncertainty=True, anomaly=True, anomaly_mask=True, regions=True,
                         extra=EXTRA_KINDS)
    ours = {p.name for p in every.values()} - {p.name for p in paths.values()}
    return [report.with_name(name) for name in listed.values()
            if isinstance(name, str) and name in ours]


def write_outputs(seg, out_dir, stem, *, overwrite, proba, log_likelihood, alpha,
                  uncertainty, anomaly, anomaly_quantile, anomaly_threshold, regions,
                  region_scale):
    """:meth:`Segmentation.save`: write the set its options ask for; see there."""
    want_mask = anomaly_quantile is not None or anomaly_threshold is not None
    limit = (seg.anomaly_threshold(anomaly_quantile, threshold=anomaly_threshold)
             if want_mask else None)
    request = region_request(seg.image, regions, region_scale)
    extra = getattr(seg, "extra_maps", {})
    paths = output_paths(seg.image, out_dir, stem, proba=proba, log_likelihood=log_likelihood,
                         uncertainty=uncertainty, anomaly=anomaly, anomaly_mask=want_mask,
                         regions=request is not None, extra=tuple(extra))
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise OutputExistsError(
                f"{existing[0]}: output exists (use overwrite=True)")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    stale = _stale_outputs(seg.image, paths, out_dir, stem) if overwrite else []
    # The report is written last and is what marks a complete set (batch
    # --resume trusts it): an old one goes first, so a save that fails
    # half-way never leaves old and new files looking complete together.
    paths["report"].unlink(missing_ok=True)
    t0 = time.perf_counter()
    written = []
    # PNG encodes run on their own threads (deflate lets go of the GIL while
    # it compresses) while this thread draws the next picture; other formats
    # are written here, in order (GeoTIFF and NIfTI writers capture warnings
    # process-wide, which threads would mix up).
    encoders = ThreadPoolExecutor(_ENCODE_THREADS, thread_name_prefix="gmmseg-encode")
    encoding = []

    def write(kind, writer, *args, **kwargs):
        if paths[kind].suffix == ".png" and writer in (write_png, write_result_map):
            try:
                encoding.append(encoders.submit(_write_one, written, paths[kind], overwrite,
                                                writer, *args, **kwargs))
                return
            except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
                pass
        _write_one(written, paths[kind], overwrite, writer, *args, **kwargs)

    try:
        # The regions first, on this thread: the encodes then have both cores.
        # (Worked out beside the drawing and encoding, they finished later:
        # measured with the compiled region code and without, at 1 and 16 Mpx.)
        region_map = None if request is None else seg.regions(request[0], scale=request[1])
        write("labels", write_result_map, seg.labels, seg.image,
              n_components=seg.n_components, colors=postprocess.segment_colors(seg.n_components))
        # A volume's overlay is a montage of slices in three planes (2-D: the image's size).
        write("overlay", write_png, seg.montage(alpha))
        segments = seg.stats()
        if proba or log_likelihood or anomaly or want_mask:
            seg.compute_maps(proba=proba, log_likelihood=log_likelihood or anomaly or want_mask)
        if region_map is not None:
            n_regions = int(region_map.max()) + 1
            write("regions", write_result_map, region_map, seg.image, n_components=n_regions,
                  colors=postprocess.segment_colors(n_regions))
            write("regions_overlay", write_png,
                  seg.montage(alpha, labels=region_map, legend=False))
        for kind, names, colors, columns in _label_tables(seg, paths, segments, region_map):
            write(kind, write_label_table, names, colors, columns=columns)
        if proba:
            write("proba", write_result_map, seg.proba, seg.image)
        for kind, values in extra.items():
            write(kind, write_result_map, values, seg.image)
        if log_likelihood or anomaly:
            write("log_likelihood", write_result_map, seg.log_likelihood, seg.image)
        heat, heat_entry = _heat_maps(seg, uncertainty, anomaly)
        if uncertainty:
            write("uncertainty", write_png, heat["uncertainty"])
            write("uncertainty_map", write_result_map, seg.uncertainty, seg.image)
        if anomaly:
            write("anomaly", write_png, heat["anomaly"])
        if want_mask:
            mask = seg.anomaly_mask(threshold=limit)
            if paths["anomaly_mask"].name.endswith(".png"):
                write("anomaly_mask", write_png, mask.astype(np.uint8) * np.uint8(255))
            else:
                write("anomaly_mask", write_result_map,
                      np.where(seg.valid, mask, -1).astype(np.int32), seg.image,
                      n_components=2)
        for done in encoding:
            done.result()
        seg.info.setdefault("timings", {})["write"] = time.perf_counter() - t0
        report = segmentation_report(seg, segments, uncertainty=uncertainty,
                                     anomaly_quantile=anomaly_quantile,
                                     anomaly_threshold=anomaly_threshold)
        if heat_entry:
            report["heat_maps"] = heat_entry
        seg.info.pop("regions", None)  # from an earlier save
        asked = regions_request(regions, region_scale)
        if asked is not None:  # batch --resume reads it
            report["regions"] = seg.info["regions"] = _regions_entry(asked, region_map)
        report["outputs"] = {kind: path.name for kind, path in paths.items()}
        write("report", write_json, report)
    except BaseException:
        for job in encoding:
            job.cancel()
        encoders.shutdown(wait=True)   # no encode may finish after the clean-up
        for p in written:
            p.unlink(missing_ok=True)
        raise
    finally:
        encoders.shutdown(wait=False)
    for path in stale:
        try:
            path.unlink(missing_ok=True)
        except OSError as err:  # the new set is complete; say so and go on
            logger.warning("could not remove %s from an earlier run: %s", path, err)
    return paths
