"""The outcome of a batch: its rows, and the summary files they are written to.

A row per input (:func:`_blank_row`, filled from the input's report by
:func:`_fill_from_report`), the :class:`BatchReport` of a run, and
``batch_summary.csv`` / ``batch_summary.json`` (with the gallery beside them).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..features import FeatureExtractor
from ..io import atomic_output, write_json
from ..mixture import GaussianMixture
from .gallery import GALLERY, gallery_html
from .inputs import BatchItem


SUMMARY_CSV = "batch_summary.csv"


SUMMARY_JSON = "batch_summary.json"


# Output kinds with a column of their path in batch_summary.csv.
_CSV_OUTPUTS = ["labels", "overlay", "regions", "regions_overlay", "report", "proba",
                "log_likelihood"]


_CSV_COLUMNS = [
    "input", "status", "error", "warnings", "width", "height", "depth", "channels",
    "valid_pixels", "n_components", "n_iter", "converged", "mean_log_likelihood", "n_regions",
    "size_units", "valid_size", "segment_sizes", "seconds", "windows", *_CSV_OUTPUTS,
]


class BatchInterrupted(KeyboardInterrupt):
    """A batch stopped by Ctrl-C (or by its progress callback); ``report`` has what finished.

    The summary files are written before this is raised; rerun with
    ``resume=True`` to finish the batch.
    """

    def __init__(self, report: BatchReport):
        super().__init__(f"batch interrupted: {report.n_ok} ok, {report.n_failed} failed, "
                         f"{report.n_cancelled} not processed")
        self.report = report


@dataclass
class BatchReport:
    """The outcome of :func:`run_batch`.

    Attributes
    ----------
    rows : list of dict
        One per input, in input order.  Keys: ``input`` (name), ``status``
        (``"ok"``; ``"skipped"``: complete from an earlier run; ``"failed"``;
        ``"cancelled"``: not processed because the batch was interrupted),
        ``error`` (one line, ``""`` if none), ``warnings`` (list of str),
        ``width``, ``height``, ``depth`` (None for 2-D), ``channels``,
        ``valid_pixels``, ``n_components``, ``n_iter``, ``converged``,
        ``mean_log_likelihood``, ``n_regions``, ``seconds``, ``windows``
        (windows of an input segmented window by window, None for one
        segmented in memory), ``shares``
        (segment shares, label order), ``size_units``, ``valid_size`` and
        ``segment_sizes`` (area or volume of the valid pixels and of each
        segment where the input's pixel size is known: in hectares
        (``"ha"``) for rasters in a projected CRS, millilitres (``"mL"``)
        for NIfTI and DICOM volumes, else the units of
        :meth:`Segmentation.stats`, e.g. ``"degree^2"`` or ``"mm^2"``),
        ``outputs`` (kind -> path relative to ``out_dir``, POSIX) and
        ``thumbnails`` (``"input"``/``"overlay"``/``"regions_overlay"`` ->
        relative path).  Unknown values are None.
    out_dir : Path
    seconds : float
        Wall time of the run.
    interrupted : bool
    shared_model : Path or None
        The model file a shared-model batch fitted (or reused).
    """

    rows: list[dict]
    out_dir: Path
    seconds: float = 0.0
    interrupted: bool = False
    shared_model: Path | None = None
    options: dict = field(default_factory=dict)

    def _count(self, status):
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def n_ok(self) -> int:
        return self._count("ok")

    @property
    def n_failed(self) -> int:
        return self._count("failed")

    @property
    def n_skipped(self) -> int:
        return self._count("skipped")

    @property
    def n_cancelled(self) -> int:
        return self._count("cancelled")

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def exit_code(self) -> int:
        """0 if every input is ok or skipped, else 1."""
        return 0 if self.n_ok + self.n_skipped == len(self.rows) else 1

    @property
    def summary_csv(self) -> Path:
        return self.out_dir / SUMMARY_CSV

    @property
    def summary_json(self) -> Path:
        return self.out_dir / SUMMARY_JSON

    @property
    def gallery(self) -> Path:
        return self.out_dir / GALLERY


def _blank_row(item: BatchItem) -> dict:
    return {
        "input": item.name, "status": "failed", "error": "", "warnings": [],
        "width": None, "height": None, "depth": None, "channels": None,
        "valid_pixels": None, "n_components": None, "n_iter": None, "converged": None,
        "mean_log_likelihood": None, "n_regions": None, "seconds": None, "windows": None,
        "shares": None,
        "size_units": None, "valid_size": None, "segment_sizes": None,
        "outputs": {}, "thumbnails": {},
    }


def _get(doc, *keys):
    """``doc[k1][k2]...``, or None where a level is missing."""
    for key in keys:
        if not isinstance(doc, Mapping) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _fill_from_report(row: dict, doc: Mapping) -> None:
    """Copy size, model and fit figures from a ``{stem}_report.json`` into a row.

    Raises ValueError if ``doc`` is no segmentation report; figures the
    report lacks stay None.
    """
    shape = _get(doc, "input", "shape")
    if not isinstance(shape, list) or len(shape) not in (3, 4):
        raise ValueError("not a gmmseg segmentation report")
    spatial = shape[:-1]
    segments = _get(doc, "segments")
    row.update(
        height=spatial[-2], width=spatial[-1], depth=spatial[0] if len(spatial) == 3 else None,
        channels=shape[-1], valid_pixels=_get(doc, "input", "valid_pixels"),
        n_components=_get(doc, "model", "n_components"), n_iter=_get(doc, "model", "n_iter"),
        converged=_get(doc, "model", "converged"),
        mean_log_likelihood=_get(doc, "mean_log_likelihood"),
        n_regions=_get(doc, "regions", "n_regions"), windows=_get(doc, "windowed", "windows"),
        shares=[round(float(s.get("share", 0.0)), 6) for s in segments]
        if isinstance(segments, list) else None,
    )
    row.update(_physical_sizes(segments))


# Segment-statistics keys with a size, most readable first, and the unit they are in.
_SIZE_KEYS = (("hectares", "ha"), ("millilitres", "mL"), ("area", None), ("volume", None))


def _physical_sizes(segments) -> dict:
    """``size_units``, ``valid_size`` and ``segment_sizes`` from a report's segments, if sized."""
    if not (isinstance(segments, list) and segments and all(isinstance(s, Mapping)
                                                            for s in segments)):
        return {}
    for key, units in _SIZE_KEYS:
        values = [s.get(key) for s in segments]
        if all(isinstance(v, (int, float)) for v in values):
            units = units or segments[0].get("units")
            sizes = [float(f"{v:.6g}") for v in values]
            return {"size_units": units, "valid_size": float(f"{sum(values):.6g}"),
                    "segment_sizes": sizes}
    return {}


def _jsonable(value):
    try:
        return json.loads(json.dumps(value, default=_json_fallback))
    except (TypeError, ValueError):
        return repr(value)


def _json_fallback(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, GaussianMixture, FeatureExtractor)) or callable(obj):
        return f"<{type(obj).__name__}>"
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


def _write_summaries(report: BatchReport, started: str) -> None:
    from .. import __version__

    counts = {"total": len(report.rows), "ok": report.n_ok, "skipped": report.n_skipped,
              "failed": report.n_failed, "cancelled": report.n_cancelled}
    doc = {
        "gmmseg_version": __version__,
        "started": started,
        "seconds": round(report.seconds, 3),
        "interrupted": report.interrupted,
        "counts": counts,
        "options": report.options,
        "rows": report.rows,
    }
    write_json(report.summary_json, doc, overwrite=True)
    with (atomic_output(report.summary_csv, overwrite=True) as tmp,
          open(tmp, "w", newline="", encoding="utf-8") as fh):
        writer = csv.DictWriter(fh, fieldnames=_CSV_COLUMNS)
        writer.writeheader()
        for row in report.rows:
            writer.writerow(_csv_row(row))
    with atomic_output(report.gallery, overwrite=True) as tmp:
        tmp.write_text(gallery_html(report, counts, started), encoding="utf-8")


def _csv_row(row: dict) -> dict:
    out = {k: row.get(k) for k in _CSV_COLUMNS if k in row and k not in ("warnings",)}
    out["warnings"] = "; ".join(row["warnings"])
    if row.get("segment_sizes"):
        out["segment_sizes"] = ";".join(f"{v:g}" for v in row["segment_sizes"])
    for kind in _CSV_OUTPUTS:
        out[kind] = row["outputs"].get(kind, "")
    return {k: ("" if v is None else v) for k, v in out.items()}
