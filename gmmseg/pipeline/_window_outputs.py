"""The files of a windowed run (:mod:`gmmseg.pipeline.windowed`) and its report.

Owns :class:`WindowOutputs` (label map, float maps and overlay preview,
written window by window, renamed into place at the end) and
:func:`finish_report` (the report JSON, written last).  Computes nothing.
"""

from __future__ import annotations

import math
import os

import numpy as np

#: Longest side of the overlay preview of a windowed run, in pixels.
PREVIEW_SIZE = 2048

#: Every file a windowed run may write, by kind: the suffix after the stem
#: (the label map is a GeoTIFF with its category table for 2-D inputs, a
#: NIfTI volume for volumes).
OUTPUT_SUFFIXES = {"labels": "_labels.tif", "labels_table": "_labels.tif.aux.xml",
                   "labels_volume": "_labels.nii.gz", "proba": "_proba.tif",
                   "loglik": "_loglik.tif", "overlay": "_overlay.png", "report": "_report.json"}


def output_name(stem, kind):
    """The name of the ``kind`` of file a windowed run of ``stem`` writes."""
    return stem + OUTPUT_SUFFIXES[kind]


def output_names(stem, kinds=None):
    """The file names a windowed run of ``stem`` writes, of ``kinds`` (default: every kind)."""
    return [output_name(stem, kind) for kind in kinds or OUTPUT_SUFFIXES]


class WindowOutputs:
    """The files of a windowed run, written window by window and renamed into place at the end.

    2-D inputs: the label map as a COG (:class:`gmmseg.io.cog.TiledGeoTIFF`),
    probabilities and log-likelihood as tiled float32 GeoTIFFs, and the
    overlay as a PNG preview of at most :data:`PREVIEW_SIZE` pixels on the
    longest side.  Volumes (NIfTI): the label volume is held as uint8 /
    uint16 (one or two bytes a voxel) and written as ``.nii.gz`` at the end.
    """

    def __init__(self, source, out_dir, stem, n_components, *, proba, log_likelihood,
                 overwrite, preview_step):
        from ..io import label_dtype
        from ..io.cog import TiledGeoTIFF
        from ..postprocess import segment_colors

        self.source, self.k = source, n_components
        self.dtype = np.dtype(label_dtype(n_components))
        self.nodata = int(np.iinfo(self.dtype).max)
        self.colors = segment_colors(n_components)
        self.paths, self.writers = {}, {}
        self.volume = len(source.shape) == 3
        self.counts = np.zeros(n_components, np.int64)
        self.ll_sum = 0.0

        def path(kind):
            return os.path.join(out_dir, output_name(stem, kind))

        try:
            if self.volume:
                self.paths["labels"] = path("labels_volume")
                self.labels = np.zeros(source.shape, self.dtype)
                return
            shape, meta = source.shape, source.meta
            self.paths["labels"] = path("labels")
            self.writers["labels"] = TiledGeoTIFF(
                self.paths["labels"], meta, shape, 1, self.dtype, self.nodata,
                colors=self.colors, descriptions=("segment label",), cog=True,
                overwrite=overwrite)
            if proba:
                self.paths["proba"] = path("proba")
                self.writers["proba"] = TiledGeoTIFF(
                    self.paths["proba"], meta, shape, n_components, np.float32, math.nan,
                    descriptions=tuple(f"segment {k}" for k in range(n_components)),
                    overwrite=overwrite)
            if log_likelihood:
                self.paths["loglik"] = path("loglik")
                self.writers["loglik"] = TiledGeoTIFF(
                    self.paths["loglik"], meta, shape, 1, np.float32, math.nan,
                    descriptions=("log-likelihood",), overwrite=overwrite)
            self.paths["overlay"] = path("overlay")
            small = tuple(-(-n // preview_step) for n in shape)
            self.preview = (np.zeros(small + (source.n_channels,), source.dtype),
                            np.zeros(small, bool), np.full(small, -1, np.int32))
        except BaseException:
            self.abort()
            raise

    def add(self, result):
        """Write one window's :class:`~._window_work.WindowResult`."""
        self.counts += result.counts
        self.ll_sum += result.log_likelihood_sum
        core = result.core
        if self.volume:
            self.labels[tuple(slice(a, b) for a, b in core)] = result.labels
            return
        self.writers["labels"].write(core, result.labels)
        if "proba" in self.writers:
            self.writers["proba"].write(core, result.proba)
        if "loglik" in self.writers:
            self.writers["loglik"].write(core, result.log_likelihood)
        (r, c), data, valid, labels = result.preview
        h, w = valid.shape
        for array, part in zip(self.preview, (data, valid, labels)):
            array[r:r + h, c:c + w] = part

    def finish(self, alpha, overwrite):
        """Finish every file (COG overviews, renames), then the preview and the label table."""
        from ..io import write_png
        from ..io.image import Image

        if self.volume:
            from ..io.medical import write_nifti

            shape = self.source.shape
            shell = Image(np.broadcast_to(np.zeros((1,) * 4, self.source.dtype), shape + (1,)),
                          np.broadcast_to(np.ones((1,) * 3, bool), shape), spacing=self.source.spacing,
                          meta=self.source.meta)
            write_nifti(self.paths["labels"], self.labels, shell, n_components=self.k,
                        overwrite=overwrite)
            return
        for writer in self.writers.values():
            writer.finish()
        self.writers = {}
        from .figures import overlay_picture

        data, valid, labels = self.preview
        image = Image(data, valid, channels=self.source.channels, meta=self.source.meta)
        write_png(self.paths["overlay"], overlay_picture(image, labels, alpha=alpha,
                                                         colors=self.colors),
                  overwrite=overwrite)

    def abort(self):
        for writer in self.writers.values():
            writer.abort()
        self.writers = {}


def finish_report(done, source, extractor, model, n_valid, fit_samples, selection, plan,
                   timings, out_dir, stem, overwrite, run_info):
    """The report (the in-memory report's entries that a windowed run knows), written last."""
    from .. import __version__
    from ..io import write_json
    from ..io.geo import write_category_names
    from .outputs import features_entry, fit_entries, model_entry

    counts = done["counts"]
    mean_ll = done["ll_sum"] / max(n_valid, 1)
    segments = [{"label": k, "pixels": int(n), "share": float(n) / max(n_valid, 1),
                 "color": [int(c) for c in done["colors"][k]]} for k, n in enumerate(counts)]
    paths = dict(done["paths"])
    if "labels" in paths and paths["labels"].endswith(OUTPUT_SUFFIXES["labels"]):
        aux = os.path.join(out_dir, output_name(stem, "labels_table"))
        write_category_names(aux, [f"segment {k}" for k in range(len(counts))], done["colors"],
                             columns={"Pixels": [int(n) for n in counts]}, overwrite=overwrite)
        paths["labels_table"] = aux
    report = {
        "gmmseg_version": __version__,
        "input": {"path": str(source.path), "shape": list(source.shape) + [source.n_channels],
                  "dtype": str(source.dtype), "channels": list(source.channels),
                  "spacing": list(source.spacing) if source.spacing else None,
                  "valid_pixels": n_valid, "valid_share": n_valid / math.prod(source.shape)},
        "features": features_entry(extractor),
        "model": model_entry(model, fit_samples, run_info["random_state"]),
        **fit_entries(model, mean_ll, n_valid),
        "smoothing": run_info["smoothing"],
        "segments": segments,
        "windowed": {"windows": len(plan), "window": list(plan.window), "halo": list(plan.halo),
                     "max_memory": run_info["max_memory"],
                     "window_bytes_per_pixel": plan.per_pixel, "workers": run_info["workers"],
                     "scheduler": run_info["scheduler"],
                     "prior_sweeps": run_info["prior_sweeps"]},
        "timings": timings,
        "files": paths,
    }
    if selection is not None:
        report["model_selection"] = selection.summary()
    if run_info.get("preset"):
        report["preset"] = run_info["preset"]
    write_json(os.path.join(out_dir, output_name(stem, "report")), report, overwrite=overwrite)
    return report
