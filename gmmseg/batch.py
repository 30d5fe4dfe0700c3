"""Many inputs: find them, segment them in parallel, resume, summarise.

``find_inputs`` (or ``items_from_files``) lists the inputs as
:class:`BatchItem` s; :func:`run_batch` segments each with
:func:`gmmseg.segment` and :meth:`Segmentation.save` in local worker
processes or on a Dask cluster, isolates per-file failures, skips complete
outputs on ``resume``, and writes ``batch_summary.csv``,
``batch_summary.json`` and an ``index.html`` gallery into the output folder.
:func:`fit_shared_model` fits one mixture on pixels pooled from all inputs
so that label k means the same class in every output.

This module prints nothing: progress goes to a callback that receives a
:class:`BatchProgress` (the CLI turns it into a progress bar).
"""

from __future__ import annotations

import copy
import csv
import fnmatch
import html
import inspect
import json
import logging
import math
import multiprocessing
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from . import postprocess
from ._system import available_cpus
from .errors import (GmmsegError, ModelFileError, OutputExistsError, TooFewDistinctRowsError,
                     one_line)
from .features import FeatureExtractor
from .io import (
    SUPPORTED_SUFFIXES,
    atomic_output,
    file_stem,
    read_image,
    remove_stale_temporaries,
    write_json,
    write_png,
)
from .mixture import GaussianMixture
from .pipeline import (DEFAULT_MAX_FIT_SAMPLES, Segmentation, fit_sample, regions_request,
                       segment, stored_feature_extractor)

logger = logging.getLogger(__name__)

__all__ = [
    "BatchInterrupted",
    "BatchItem",
    "BatchProgress",
    "BatchReport",
    "check_model_input",
    "find_inputs",
    "fit_shared_model",
    "format_progress",
    "items_from_files",
    "load_shared_model",
    "run_batch",
    "save_shared_model",
]

SUMMARY_CSV = "batch_summary.csv"
SUMMARY_JSON = "batch_summary.json"
GALLERY = "index.html"
THUMBS_DIR = "thumbs"
SHARED_MODEL = "shared_model.npz"
#: Longest side of the gallery thumbnails, in pixels.
THUMB_SIZE = 192
#: Default number of valid pixels drawn from each image for a shared model.
DEFAULT_PER_IMAGE = 20_000

# Output kinds of Segmentation.save and the tag in their file names.
_OUTPUT_TAGS = {"labels": "labels", "overlay": "overlay", "report": "report",
                "proba": "proba", "log_likelihood": "loglik"}
_SAVE_DEFAULTS = {n: p.default for n, p in inspect.signature(Segmentation.save).parameters.items()}
_SEGMENT_DEFAULTS = {n: p.default for n, p in inspect.signature(segment).parameters.items()}
_OUTPUT_PATH_OPTIONS = set(inspect.signature(Segmentation.output_paths).parameters) - {
    "self", "out_dir", "stem", "anomaly_mask"}
# Output kinds with a column of their path in batch_summary.csv.
_CSV_OUTPUTS = ["labels", "overlay", "regions", "regions_overlay", "report", "proba",
                "log_likelihood"]
_CSV_COLUMNS = [
    "input", "status", "error", "warnings", "width", "height", "depth", "channels",
    "valid_pixels", "n_components", "n_iter", "converged", "mean_log_likelihood", "n_regions",
    "seconds", *_CSV_OUTPUTS,
]


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch and where its outputs go.

    Parameters
    ----------
    path : Path
        The input file as found (a symbolic link stays one; it is only read).
    rel_dir : str
        Output folder relative to the batch's output folder, POSIX style,
        ``"."`` for the top; never absolute, never with ``..``.
    stem : str
        Output file names start with this (``{stem}_labels.png``, ...).
    name : str
        How the input is shown in summaries: its path relative to the input
        folder, or the path as given.
    """

    path: Path
    rel_dir: str
    stem: str
    name: str

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        rel_dir = str(self.rel_dir)
        if os.altsep:
            rel_dir = rel_dir.replace(os.altsep, "/")
        rel = PurePosixPath(rel_dir.replace(os.sep, "/") or ".")
        if rel.is_absolute() or ".." in rel.parts or Path(rel_dir).is_absolute():
            raise ValueError(
                f"{self.name}: output folder {self.rel_dir!r} must be relative and "
                "without '..'")
        object.__setattr__(self, "rel_dir", rel.as_posix())
        separators = {"/", "\0", os.sep, os.altsep} - {None}
        if not isinstance(self.stem, str) or not self.stem or any(
                c in self.stem for c in separators):
            raise ValueError(f"{self.name}: output stem {self.stem!r} is not a plain file name")


def _pattern_hit(rel: str, patterns: Sequence[str]) -> bool:
    rel = rel.lower()
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        pattern = pattern.lower()
        if fnmatch.fnmatchcase(rel if "/" in pattern else name, pattern):
            return True
    return False


def _is_supported(name: str) -> bool:
    return name.lower().endswith(SUPPORTED_SUFFIXES)


def find_inputs(
    input_dir: str | os.PathLike,
    *,
    recursive: bool = False,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> list[BatchItem]:
    """The input files of a folder with their output places.

    Order: a folder's files by name, then its subfolders by name, depth first.

    Parameters
    ----------
    input_dir : path
        Folder to scan.
    recursive : bool, default=False
        Also scan subfolders; outputs mirror the folder tree.  Symbolically
        linked folders are not entered (no loops, no escapes); linked files
        are read, their outputs go where the link is.
    include : sequence of str, optional
        Glob patterns (case-insensitive) a file must match: a pattern with
        ``/`` is matched against the path relative to ``input_dir``, one
        without against the file name.  Default: the suffixes gmmseg reads
        (``gmmseg.io.SUPPORTED_SUFFIXES``); ``["*"]`` takes every file.
    exclude : sequence of str, optional
        Glob patterns, as for ``include``, of files to leave out.
    out_dir : path, optional
        The batch's output folder: if it lies inside ``input_dir`` it is not
        scanned.

    Returns
    -------
    list of BatchItem
        Hidden files and folders (name starting with ``.``) are skipped.

    Raises
    ------
    GmmsegError
        ``input_dir`` is not a folder, or is the output folder itself.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise GmmsegError(f"{root}: not a folder")
    skip = Path(out_dir).resolve() if out_dir is not None else None
    if skip is not None and skip == root.resolve():
        raise GmmsegError(
            f"{root}: the output folder is the input folder; write the outputs elsewhere")
    include = list(include) if include else None
    exclude = list(exclude or ())
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        if recursive:
            dirnames[:] = sorted(
                d for d in dirnames
                if not d.startswith(".") and not (here / d).is_symlink()
                and (skip is None or (here / d).resolve() != skip))
        else:
            dirnames[:] = []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if include is None and not _is_supported(name):
                continue
            if include is not None and not _pattern_hit(rel, include):
                continue
            if exclude and _pattern_hit(rel, exclude):
                continue
            path = here / name
            # Regular files and links to them; a dangling link is kept so that
            # it is reported; FIFOs, sockets and devices are never opened.
            if path.is_file() or (path.is_symlink() and not path.exists()):
                items.append(BatchItem(path, rel_dir, file_stem(name), rel))
    return items


def items_from_files(paths: Iterable[str | os.PathLike]) -> list[BatchItem]:
    """Items for files given one by one: every output goes into the top folder."""
    return [BatchItem(Path(p), ".", file_stem(p), str(p)) for p in paths]


# ---------------------------------------------------------------------------
# shared model
# ---------------------------------------------------------------------------


def _spatial_kind(ndim):
    return {2: "2-D images", 3: "volumes"}.get(ndim, f"{ndim}-D data")


def check_model_input(image, extractor: FeatureExtractor, *, path=None) -> None:
    """Raise a one-line :class:`GmmsegError` unless the model's features fit ``image``.

    Parameters
    ----------
    image : Image
    extractor : FeatureExtractor
        The fitted extractor stored with the model.
    path : path, optional
        Names the file in the message (default ``image.path``).

    Examples
    --------
    >>> from gmmseg.io import Image
    >>> fx = FeatureExtractor("bands")
    >>> _ = fx.fit_transform(Image(np.zeros((4, 4, 3)), np.ones((4, 4), bool)))
    >>> check_model_input(Image(np.zeros((4, 4, 6)), np.ones((4, 4), bool)), fx, path="x.tif")
    Traceback (most recent call last):
    ...
    gmmseg.errors.GmmsegError: x.tif: model expects 3 channels, image has 6
    """
    where = path if path is not None else (image.path or "image")
    ndim = len(image.spatial_shape)
    if ndim != extractor.spatial_ndim_:
        raise GmmsegError(
            f"{where}: model expects {_spatial_kind(extractor.spatial_ndim_)}, "
            f"input is {'a volume' if ndim == 3 else 'a 2-D image'}")
    if image.n_channels != extractor.input_channels_:
        raise GmmsegError(
            f"{where}: model expects {extractor.input_channels_} channels, "
            f"image has {image.n_channels}")


def fit_shared_model(
    paths: Iterable[str | os.PathLike],
    *,
    n_components: int = 4,
    features="auto",
    per_image: int | None = DEFAULT_PER_IMAGE,
    standardize: bool = True,
    pca=None,
    covariance_type: str = "full",
    random_state: int | None = 0,
    max_fit_samples: int | None = DEFAULT_MAX_FIT_SAMPLES,
    init_params: str = "k-means++",
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_jobs: int | None = None,
    read_kwargs: Mapping | None = None,
    progress: Callable[[BatchProgress], None] | None = None,
) -> tuple[GaussianMixture, FeatureExtractor]:
    """Fit one mixture on valid pixels pooled from many images.

    Each image is read in turn, at most ``per_image`` of its valid pixels are
    drawn (:meth:`FeatureExtractor.fit_many`), and the image is released;
    the feature statistics and the mixture are fitted on the pool (at most
    ``max_fit_samples`` rows of it).  Applying the result to every image
    (``run_batch(model=...)``) gives labels that mean the same class in all
    of them.  Inputs that cannot be used (unreadable, no valid pixel,
    another band count or dimensionality than the first readable one) are
    skipped and listed in ``model.metadata_["shared_fit"]["skipped"]``.

    Parameters
    ----------
    paths : iterable of path
    n_components, features, standardize, pca, covariance_type, random_state,
    max_fit_samples, init_params, n_init, max_iter, tol, reg_covar, n_jobs :
        As for :func:`gmmseg.segment`.
    per_image : int or None, default=20000
        Pixels drawn from each image (None: all).
    read_kwargs : mapping, optional
        Passed to :func:`gmmseg.read_image` (``bands``, ``nodata``, ...).
    progress : callable, optional
        Called with a :class:`BatchProgress` (phase ``"fit"``) after each file.

    Returns
    -------
    model : GaussianMixture
        Components in canonical order; ``metadata_`` holds ``"features"``
        (the extractor's ``to_dict()``) and ``"shared_fit"`` (images used,
        rows pooled, skipped files with their reasons).
    extractor : FeatureExtractor

    Raises
    ------
    GmmsegError
        No input could be used, or the pool has fewer distinct pixels than K.
    """
    paths = [Path(p) for p in paths]
    read_kwargs = dict(read_kwargs or {})
    tracker = _Tracker("fit", len(paths), progress)
    skipped: list[list[str]] = []
    used: list[str] = []
    first: dict = {}  # ndim, channels and path of the first usable input

    def images():
        for path in paths:
            try:
                image = read_image(path, **read_kwargs)
                if first:
                    if image.ndim != first["ndim"]:
                        raise GmmsegError(
                            f"{path}: is {'a volume' if image.ndim == 3 else 'a 2-D image'}, "
                            f"unlike the first input {first['path']}")
                    if image.n_channels != first["channels"]:
                        raise GmmsegError(
                            f"{path}: has {image.n_channels} channels, the first input "
                            f"{first['path']} has {first['channels']}")
                if image.n_valid == 0:
                    raise GmmsegError(
                        f"{path}: no valid pixels (all masked, NaN or nodata)")
            except Exception as err:  # one bad input must not stop the fit
                reason = _reason(err, path)
                skipped.append([str(path), reason])
                tracker.finished({"input": str(path), "status": "failed", "error": reason})
                continue
            if not first:
                first.update(ndim=image.ndim, channels=image.n_channels, path=path)
            used.append(str(path))
            yield image
            del image
            tracker.finished({"input": str(path), "status": "ok", "error": ""})

    tracker.start()
    extractor = FeatureExtractor(features, standardize=standardize, pca=pca)
    try:
        X = extractor.fit_many(images(), per_image=per_image, random_state=random_state)
    except ValueError as err:
        if not used:
            raise GmmsegError(
                f"none of the {len(paths)} input(s) can be used to fit a shared model"
                + (f" (first problem: {skipped[0][0]}: {skipped[0][1]})" if skipped else "")
            ) from err
        raise GmmsegError(f"shared model: {one_line(err)}") from err
    n_pooled = len(X)
    X = fit_sample(X, max_fit_samples, random_state)
    model = GaussianMixture(
        n_components, covariance_type=covariance_type, random_state=random_state,
        init_params=init_params, n_init=n_init, max_iter=max_iter, tol=tol,
        reg_covar=reg_covar, n_jobs=n_jobs)
    try:
        model.fit(X)
    except TooFewDistinctRowsError as err:
        raise GmmsegError(
            f"shared model: the pooled pixels have fewer distinct values than "
            f"n_components={n_components}; use a smaller -k") from err
    except ValueError as err:
        raise GmmsegError(f"shared model: {one_line(err)}") from err
    model.sort_components()
    model.set_params(n_jobs=None)  # the thread count is the applier's choice
    model.metadata_ = {
        "features": extractor.to_dict(),
        "shared_fit": {
            "images": len(used),
            "per_image": per_image,
            "pooled_pixels": n_pooled,
            "fit_pixels": len(X),
            "skipped": skipped,
        },
    }
    return model, extractor


def save_shared_model(path, model: GaussianMixture, extractor: FeatureExtractor, *,
                      overwrite: bool = False) -> Path:
    """Write a shared model with its feature extractor (``.npz`` or ``.json``, no pickle).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    ValueError
        The extractor holds a user callable (code cannot be stored).
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path}: model file exists (use --overwrite / overwrite=True)")
    metadata = dict(getattr(model, "metadata_", None) or {})
    metadata["features"] = extractor.to_dict()
    model.save(path, metadata=metadata)
    return path


def load_shared_model(path) -> tuple[GaussianMixture, FeatureExtractor]:
    """Read a model written by :func:`save_shared_model` (or ``gmmseg fit``).

    Raises
    ------
    ModelFileError
        The file is not a gmmseg model, or holds no fitted feature extractor
        matching the mixture.
    """
    path = Path(path)
    model = GaussianMixture.load(path)
    spec = model.metadata_.get("features")
    if spec is None:
        raise ModelFileError(
            f"{path}: the model stores no feature extractor, so it cannot be applied to "
            "images; make it with 'gmmseg fit'")
    try:
        extractor = FeatureExtractor.from_dict(spec)
    except ValueError as err:
        raise ModelFileError(f"{path}: {one_line(err)}") from err
    if not extractor.is_fitted:
        raise ModelFileError(f"{path}: the stored feature extractor is not fitted")
    if extractor.n_features_ != model.means_.shape[1]:
        raise ModelFileError(
            f"{path}: the feature extractor gives {extractor.n_features_} features but the "
            f"mixture has {model.means_.shape[1]}")
    return model, extractor


def _fit_kwargs(segment_kwargs: Mapping) -> dict:
    """The entries of ``segment_kwargs`` that :func:`fit_shared_model` takes."""
    names = set(inspect.signature(fit_shared_model).parameters) - {
        "paths", "per_image", "read_kwargs", "progress"}
    return {k: v for k, v in segment_kwargs.items() if k in names}


# ---------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands; passed to the ``progress`` callback.

    The callback is called in the calling process (never in a worker):
    once when a phase starts (``row`` None, ``skipped`` already counted)
    and once after every input of the phase finishes, in completion order.
    Whatever it raises aborts the batch like Ctrl-C (see :func:`run_batch`).

    Attributes
    ----------
    phase : {"fit", "segment"}
        ``"fit"``: drawing pixels for a shared model (one event per input
        read); ``"segment"``: segmenting and writing.
    total : int
        Inputs in this phase.
    ok, failed, skipped : int
        Inputs finished so far; ``skipped`` were complete from an earlier
        run (``resume``).
    elapsed : float
        Seconds since the phase started.
    row : dict or None
        The summary row of the input that just finished (see
        :class:`BatchReport`); in the fit phase only ``input``, ``status``
        and ``error``.
    """

    phase: str
    total: int
    ok: int
    failed: int
    skipped: int
    elapsed: float
    row: dict | None = None

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped

    @property
    def remaining(self) -> int:
        return self.total - self.done

    @property
    def eta(self) -> float | None:
        """Seconds left, from this run's rate; None before the first input finished."""
        processed = self.ok + self.failed
        if processed == 0:
            return None if self.remaining else 0.0
        return self.elapsed / processed * self.remaining


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def format_progress(p: BatchProgress) -> str:
    """One plain log line for a progress event (for output that is not a terminal).

    Examples
    --------
    >>> format_progress(BatchProgress("segment", 10, 3, 1, 2, 8.0,
    ...                 {"input": "a", "status": "failed", "error": "bad"}))
    'segment 6/10: 3 ok, 1 failed, 2 skipped, 4 left, 0:08 elapsed, ETA 0:08 | a: failed: bad'
    """
    text = (f"{p.phase} {p.done}/{p.total}: {p.ok} ok, {p.failed} failed, {p.skipped} skipped, "
            f"{p.remaining} left, {_clock(p.elapsed)} elapsed, ETA {_clock(p.eta)}")
    if p.row is not None:
        text += f" | {p.row['input']}: {p.row['status']}"
        if p.row.get("error"):
            text += f": {p.row['error']}"
    return text


class _Tracker:
    def __init__(self, phase, total, callback, skipped=0):
        self.phase, self.total, self.callback = phase, total, callback
        self.ok = self.failed = 0
        self.skipped = skipped
        self.t0 = time.perf_counter()

    def _emit(self, row):
        if self.callback is not None:
            self.callback(BatchProgress(self.phase, self.total, self.ok, self.failed,
                                        self.skipped, time.perf_counter() - self.t0, row))

    def start(self):
        self.t0 = time.perf_counter()
        self._emit(None)

    def finished(self, row):
        if row["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
        self._emit(row)


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------


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
        ``mean_log_likelihood``, ``seconds``, ``shares`` (segment shares,
        label order), ``outputs`` (kind -> path relative to ``out_dir``,
        POSIX) and ``thumbnails`` (``"input"``/``"overlay"`` -> relative
        path).  Unknown values are None.
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
        "mean_log_likelihood": None, "n_regions": None, "seconds": None, "shares": None,
        "outputs": {}, "thumbnails": {},
    }


def _reason(err: BaseException, path) -> str:
    """A failure as one line, without the leading ``path: `` (the row names the input)."""
    text = one_line(err)
    text = text.removeprefix(f"{path}: ")
    if isinstance(err, MemoryError):
        return f"out of memory ({text})"
    if not isinstance(err, (GmmsegError, ValueError, OSError)):
        return f"internal error ({type(err).__name__}: {text})"
    return text


def _rel(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


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
        n_regions=_get(doc, "regions", "n_regions"),
        shares=[round(float(s.get("share", 0.0)), 6) for s in segments]
        if isinstance(segments, list) else None,
    )


# ---------------------------------------------------------------------------
# per-file work (runs in worker processes)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """Everything a worker needs besides the item; identical for every input."""

    out_dir: str
    segment_kwargs: dict
    save_kwargs: dict
    read_kwargs: dict
    overwrite: bool
    threads: int
    model: GaussianMixture | None = None
    extractor: FeatureExtractor | None = None
    thumbnails: bool = True


def _inside(out_dir, rel_dir: str) -> Path:
    """``out_dir / rel_dir``, refused if it resolves outside ``out_dir`` (symlinks)."""
    root = Path(out_dir).resolve()
    folder = Path(out_dir) / rel_dir
    real = folder.resolve()
    if real != root and root not in real.parents:
        raise GmmsegError(
            f"output folder {folder} resolves to {real}, outside the output folder {root} "
            "(a symbolic link?); refusing to write there")
    return folder


def _output_folder(out_dir, item: BatchItem) -> Path:
    return _inside(out_dir, item.rel_dir)


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = THUMB_SIZE / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _thumb_paths(out_dir: Path, item: BatchItem) -> dict[str, Path]:
    folder = out_dir / THUMBS_DIR / item.rel_dir
    return {kind: folder / f"{item.stem}_{kind}.thumb.png" for kind in ("input", "overlay")}


def _write_thumbnails(out_dir: Path, item: BatchItem, image, overlay_rgb) -> dict[str, str]:
    """Small PNGs of the input (display-stretched) and of the overlay, for the gallery."""
    _inside(out_dir, f"{THUMBS_DIR}/{item.rel_dir}")
    paths = _thumb_paths(out_dir, item)
    data, valid = image.data, image.valid
    if image.ndim == 3:  # middle slice, as the overlay shows
        data, valid = data[data.shape[0] // 2], valid[valid.shape[0] // 2]
    pictures = {"input": postprocess.display_rgb(data, valid), "overlay": overlay_rgb}
    paths["input"].parent.mkdir(parents=True, exist_ok=True)
    for kind, path in paths.items():
        write_png(path, _thumbnail(pictures[kind]), overwrite=True)
    return {kind: _rel(path, out_dir) for kind, path in paths.items()}


def _path_options(save_kwargs: Mapping) -> dict:
    """The ``save`` options that decide which files it writes, for ``output_paths``."""
    options = {k: v for k, v in save_kwargs.items() if k in _OUTPUT_PATH_OPTIONS}
    options["anomaly_mask"] = (save_kwargs.get("anomaly_quantile") is not None
                               or save_kwargs.get("anomaly_threshold") is not None)
    return options


def _segment_one(item: BatchItem, task: _Task, protected: frozenset) -> dict:
    image = read_image(item.path, **task.read_kwargs)
    kwargs = dict(task.segment_kwargs)
    kwargs.setdefault("n_jobs", task.threads)
    if task.model is not None:
        check_model_input(image, task.extractor, path=item.path)
        model = copy.copy(task.model)
        model.set_params(n_jobs=kwargs["n_jobs"])
        kwargs.update(model=model, feature_extractor=task.extractor)
    seg = segment(image, **kwargs)
    folder = _output_folder(task.out_dir, item)
    targets = seg.output_paths(folder, item.stem, **_path_options(task.save_kwargs))
    for target in targets.values():
        if str(target.resolve()) in protected:
            raise GmmsegError(f"{target}: output would replace an input file")
    paths = seg.save(folder, item.stem, overwrite=task.overwrite, **task.save_kwargs)
    out_dir = Path(task.out_dir)
    result = {"outputs": {kind: _rel(p, out_dir) for kind, p in paths.items()}}
    if task.thumbnails:
        try:
            overlay_rgb = seg.overlay(task.save_kwargs.get("alpha", 0.5))
            result["thumbnails"] = _write_thumbnails(out_dir, item, seg.image, overlay_rgb)
        except Exception as err:  # a missing thumbnail must not fail the input
            warnings.warn(f"no gallery thumbnail: {one_line(err)}", RuntimeWarning,
                          stacklevel=1)
    result["report_doc"] = json.loads(paths["report"].read_text())
    return result


def _process(item: BatchItem, task: _Task, protected: frozenset = frozenset()) -> dict:
    """Segment and save one input; every exception becomes the row's one-line error."""
    row = _blank_row(item)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Small matrix products (k-means++, M-step) only slow down with
            # BLAS threads; EM parallelises over rows itself (n_jobs).
            with threadpool_limits(limits=1, user_api="blas"):
                result = _segment_one(item, task, protected)
            _fill_from_report(row, result.pop("report_doc"))
            row.update(result, status="ok")
        except Exception as err:  # one bad input must not stop the others
            row["error"] = _reason(err, item.path)
            logger.debug("%s failed", item.path, exc_info=True)
    seen = []
    for w in caught:
        text = one_line(w.message)
        if text not in seen:
            seen.append(text)
    row["warnings"] = seen
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


def _limit_process_threads(threads: int) -> None:
    """Per-process thread caps for a worker that runs one input at a time."""
    cv2.setNumThreads(threads)
    threadpool_limits(limits=1, user_api="blas")
    threadpool_limits(limits=threads, user_api="openmp")


def _init_worker(threads: int) -> None:
    # Ctrl-C goes to the whole process group: let the parent decide, so
    # running inputs finish and are recorded.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_process_threads(threads)


def _process_on_dask(item: BatchItem, task: _Task, protected: frozenset) -> dict:
    _limit_process_threads(task.threads)
    return _process(item, task, protected)


# ---------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------


def _completed_row(item: BatchItem, out_dir: Path, save_kwargs: Mapping,
                   n_components: int | None) -> dict | None:
    """The row of an input whose outputs are complete, or None.

    Complete: ``{stem}_report.json`` (written last by ``Segmentation.save``,
    atomically) exists and parses, and every output the run asks for
    exists (paths the report lists, if it lists any, too).  Outputs from a
    run with another number of components give a failed row.
    """
    try:
        folder = _output_folder(str(out_dir), item)
    except GmmsegError:
        return None
    report = folder / f"{item.stem}_report.json"
    try:
        doc = json.loads(report.read_text())
        row = _blank_row(item)
        _fill_from_report(row, doc)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    kinds = ["labels", "overlay"]
    kinds += [k for k in ("proba", "log_likelihood") if save_kwargs.get(k)]
    outputs = {"report": _rel(report, out_dir)}
    for kind in kinds:
        pattern = f"{_glob_escape(item.stem)}_{_OUTPUT_TAGS[kind]}.*"
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if not found:
            return None
        outputs[kind] = _rel(found[0], out_dir)
    listed = doc.get("outputs")
    if isinstance(listed, Mapping) and not all(
            (folder / Path(str(p)).name).is_file() for p in listed.values()):
        return None
    if isinstance(listed, Mapping):  # e.g. regions, anomaly maps
        for kind, name in listed.items():
            outputs.setdefault(str(kind), _rel(folder / Path(str(name)).name, out_dir))
    wanted_regions = save_kwargs.get("regions", _SAVE_DEFAULTS["regions"])
    if wanted_regions not in (None, False):
        done = doc.get("regions") or {}
        if (done.get("requested"), done.get("scale")) != regions_request(
                wanted_regions, save_kwargs.get("region_scale", _SAVE_DEFAULTS["region_scale"])):
            return None  # no regions, or others than asked for: redo the input
        if done.get("n_regions") is not None and done.get("ridge") != postprocess.REGION_RIDGE:
            return None  # regions merged another way (before Gaussian merging): redo
    if n_components is not None and row["n_components"] != n_components:
        row.update(status="failed", error=(
            f"outputs exist from a run with n_components={row['n_components']} (this run: "
            f"{n_components}); use --overwrite to redo them"))
        return row
    row["status"] = "skipped"
    row["outputs"] = {k: outputs[k] for k in _OUTPUT_TAGS if k in outputs}
    row["outputs"].update((k, v) for k, v in outputs.items() if k not in _OUTPUT_TAGS)
    thumbs = _thumb_paths(out_dir, item)
    if all(p.is_file() for p in thumbs.values()):
        row["thumbnails"] = {k: _rel(p, out_dir) for k, p in thumbs.items()}
    timings = doc.get("timings") or {}
    row["seconds"] = round(float(timings.get("total", 0.0)) + float(timings.get("write", 0.0)), 4)
    return row


def _remove_stale_temporaries(out_dir: Path, items: Sequence[BatchItem]) -> None:
    """Delete what a killed run left half-written in the folders this batch writes to.

    A folder that cannot be used (a file in its place, a symlink out of
    ``out_dir`` or in a loop, no permission) is left alone: the inputs that
    write there fail on their own, one row each.
    """
    rel_dirs = {item.rel_dir for item in items} | {"."}  # "." holds the summaries
    for rel_dir in sorted(rel_dirs):
        for base in (Path("."), Path(THUMBS_DIR)):
            try:
                remove_stale_temporaries(_inside(out_dir, str(base / rel_dir)))
            except (GmmsegError, OSError, RuntimeError) as err:
                logger.debug("stale temporaries in %s not removed: %s", rel_dir, err)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _restore_thumbnails(row: dict, item: BatchItem, out_dir: Path, read_kwargs) -> None:
    """Make missing thumbnails of a skipped input (interrupted between save and thumbnails)."""
    try:
        image = read_image(item.path, **read_kwargs)
        overlay = cv2.imread(str(out_dir / row["outputs"]["overlay"]), cv2.IMREAD_COLOR)
        if overlay is None:
            raise GmmsegError("cannot read the overlay back")
        row["thumbnails"] = _write_thumbnails(out_dir, item, image, overlay[..., ::-1])
    except Exception as err:  # the outputs are complete; only the gallery lacks a picture
        row["warnings"] = [*row["warnings"], f"no gallery thumbnail: {one_line(err)}"]


# ---------------------------------------------------------------------------
# executors
# ---------------------------------------------------------------------------


def _run_in_process(work, task, record):
    for index, item, protected in work:
        record(index, _process(item, task, protected))


def _pool_context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        # Forking a process that runs threads (progress bars, BLAS) is unsafe;
        # the fork server starts clean and imports gmmseg once for all workers.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["gmmseg.batch"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_processes(work, task, jobs, record, harvest):
    executor = ProcessPoolExecutor(jobs, mp_context=_pool_context(), initializer=_init_worker,
                                   initargs=(task.threads,))
    futures = {}
    try:
        for index, item, protected in work:
            futures[executor.submit(_process, item, task, protected)] = (index, item)
        for future in as_completed(futures):
            index, item = futures[future]
            record(index, _future_row(future, item))
    except BaseException:
        try:
            # Pending inputs are dropped, running ones finish (workers ignore Ctrl-C).
            executor.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            pass
        for future, (index, item) in futures.items():
            if future.done() and not future.cancelled():
                harvest(index, _future_row(future, item))
        raise
    executor.shutdown(wait=True)


def _future_row(future, item):
    try:
        return future.result()
    except BrokenProcessPool:
        row = _blank_row(item)
        row["error"] = "the worker process died (killed, or out of memory?)"
        return row


def _require_distributed():
    try:
        import distributed
    except ImportError as err:
        raise GmmsegError(
            "running a batch on Dask needs dask.distributed: pip install 'gmmseg[dask]'"
        ) from err
    return distributed


def _run_dask(work, task, scheduler, jobs, record, harvest):
    distributed = _require_distributed()
    cluster = None
    try:
        if scheduler == "local":
            cluster = distributed.LocalCluster(
                n_workers=jobs, threads_per_worker=1, processes=True,
                dashboard_address=None)
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(scheduler)
    except Exception as err:
        if cluster is not None:
            cluster.close()
        raise GmmsegError(f"cannot connect to the Dask scheduler {scheduler}: "
                          f"{one_line(err)}") from err
    futures = {}
    try:
        work = list(work)
        if work:
            shared = client.scatter(task, broadcast=True)
            submitted = client.map(
                _process_on_dask, [w[1] for w in work], [shared] * len(work),
                [w[2] for w in work], pure=False)
            futures = {f.key: (f, index, item)
                       for f, (index, item, _) in zip(submitted, work)}
        for future in distributed.as_completed([f for f, _, _ in futures.values()]):
            _, index, item = futures[future.key]
            record(index, _dask_row(future, item))
    except BaseException:
        pending = [f for f, _, _ in futures.values() if not f.done()]
        client.cancel(pending)
        for future, index, item in futures.values():
            if future.status == "finished":
                harvest(index, _dask_row(future, item))
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _dask_row(future, item):
    try:
        return future.result()
    except Exception as err:  # KilledWorker, lost connection, ...
        row = _blank_row(item)
        row["error"] = f"Dask task failed ({type(err).__name__}: {one_line(err)})"
        return row


# ---------------------------------------------------------------------------
# run_batch
# ---------------------------------------------------------------------------


def _check_same_shared_model(path, model, extractor, segment_kwargs):
    """Refuse to resume with a shared model fitted under other options."""
    options = {**_SEGMENT_DEFAULTS, **segment_kwargs}
    wanted = {
        "n_components": options["n_components"],
        "covariance_type": options["covariance_type"],
        "features": FeatureExtractor(options["features"], pca=options["pca"]).spec_string,
    }
    found = {"n_components": model.n_components, "covariance_type": model.covariance_type,
             "features": extractor.spec_string}
    if wanted["features"] == "auto":
        found["features"] = "auto"  # resolved per image kind: not comparable
    differ = [f"{k}={found[k]} (this run: {wanted[k]})" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise GmmsegError(f"{path}: shared model was fitted with {', '.join(differ)}; "
                          "use --overwrite to refit it")


def run_batch(
    items: Sequence[BatchItem],
    out_dir: str | os.PathLike,
    *,
    segment_kwargs: Mapping | None = None,
    save_kwargs: Mapping | None = None,
    read_kwargs: Mapping | None = None,
    jobs: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    model: GaussianMixture | None = None,
    feature_extractor: FeatureExtractor | None = None,
    shared_model: bool = False,
    per_image: int | None = DEFAULT_PER_IMAGE,
    thumbnails: bool = True,
    progress: Callable[[BatchProgress], None] | None = None,
) -> BatchReport:
    """Segment many inputs, each in isolation, and write the batch summary.

    For every item, ``gmmseg.segment(path, **segment_kwargs)`` then
    ``Segmentation.save(out_dir / item.rel_dir, item.stem, ...)``.  An input
    that fails gets its one-line reason in the summary and the batch goes
    on; warnings (e.g. EM not converged) are recorded in its row.

    Parameters
    ----------
    items : sequence of BatchItem
        From :func:`find_inputs` or :func:`items_from_files`.
    out_dir : path
        Created if needed.  Nothing is written outside it: output folders
        that resolve elsewhere (symbolic links) are refused, and so is an
        output that would replace an input.
    segment_kwargs : mapping, optional
        Keyword arguments of :func:`gmmseg.segment` (``n_components``,
        ``features``, ``random_state``, ...).  ``n_jobs`` defaults to the
        per-worker thread count.
    save_kwargs : mapping, optional
        ``proba``, ``log_likelihood``, ``alpha`` of :meth:`Segmentation.save`.
    read_kwargs : mapping, optional
        Passed to :func:`gmmseg.read_image` (``bands``, ``nodata``, ...).
    jobs : int, optional
        Worker processes (local) or Dask workers (``scheduler="local"``);
        default: all cores.  ``1`` runs in this process.
    scheduler : str, optional
        None: local processes; ``"local"``: a ``distributed.LocalCluster`` of
        ``jobs`` single-threaded worker processes; an address such as
        ``"tcp://host:8786"``: an existing Dask cluster (the inputs and
        ``out_dir`` must be reachable at the same paths from its workers).
    threads : int, optional
        Threads per worker for EM (``n_jobs``) and OpenCV; BLAS is always
        single-threaded in a batch.  Default: cores // jobs locally (so the
        machine is not oversubscribed), 1 on a remote cluster.  The same
        seed and threads give byte-identical label maps, locally and on
        Dask.
    resume : bool, default=False
        Skip inputs whose outputs are complete: the report JSON (written
        last, atomically) parses and every output exists; the others are
        (re)done, replacing any part an interrupted run left.  Every file is
        written to a temporary name and renamed, so an interrupted run leaves
        nothing that looks complete; the temporaries a killed run left
        (``.{name}.tmp-XXXXXXXX``) are deleted.
    overwrite : bool, default=False
        Replace existing outputs (else such an input fails, "output exists").
    model, feature_extractor : optional
        Apply this fitted mixture (and extractor; default: the one in
        ``model.metadata_``) to every input instead of fitting one per
        image.  Inputs it does not fit fail with e.g. "model expects 3
        channels, image has 6".
    shared_model : bool, default=False
        Fit one mixture on up to ``per_image`` pixels of every input
        (:func:`fit_shared_model`, with the fitting entries of
        ``segment_kwargs``), save it as ``out_dir/shared_model.npz`` and
        apply it to every input.  With ``resume`` an existing model file is
        reused.
    per_image : int or None, default=20000
        Pixels drawn from each image for the shared model.
    thumbnails : bool, default=True
        Write gallery thumbnails under ``out_dir/thumbs/``.
    progress : callable, optional
        ``progress(BatchProgress)``, called in this process; see
        :class:`BatchProgress`.

    Returns
    -------
    BatchReport
        Its rows are in the order of ``items``; ``batch_summary.csv``,
        ``batch_summary.json`` and ``index.html`` are written (atomically)
        into ``out_dir``.

    Raises
    ------
    BatchInterrupted
        On Ctrl-C or an exception from ``progress``: pending inputs are
        cancelled, running ones finish, the summary (rows of unprocessed
        inputs have status ``"cancelled"``) is written, then this is raised
        with ``.report``.
    GmmsegError
        The shared model cannot be fitted, the model file exists (without
        ``resume``/``overwrite``), or the Dask scheduler cannot be reached.
    """
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    items = list(items)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    segment_kwargs = dict(segment_kwargs or {})
    save_kwargs = dict(save_kwargs or {})
    read_kwargs = dict(read_kwargs or {})
    if jobs is not None and (isinstance(jobs, bool) or int(jobs) < 1):
        raise ValueError(f"jobs must be a positive number of workers, got {jobs!r}")
    jobs = int(jobs) if jobs else available_cpus()
    if threads is None:
        threads = segment_kwargs.get("n_jobs") or (
            1 if scheduler not in (None, "local") else max(1, available_cpus() // jobs))
    threads = int(threads)

    rows: list[dict | None] = [None] * len(items)
    # Two inputs with the same output names in one folder: the later fails.
    first_of: dict[tuple[str, str], BatchItem] = {}
    for i, item in enumerate(items):
        key = (item.rel_dir, item.stem)
        if key in first_of:
            row = _blank_row(item)
            row["error"] = (f"same output names as {first_of[key].name}; rename one of them "
                            "or use --exclude")
            rows[i] = row
        else:
            first_of[key] = item

    model_file = None
    if shared_model and model is None:
        model_file = out_dir / SHARED_MODEL
        if resume and model_file.exists():
            model, feature_extractor = load_shared_model(model_file)
            _check_same_shared_model(model_file, model, feature_extractor, segment_kwargs)
        else:
            if model_file.exists() and not overwrite:
                raise OutputExistsError(
                    f"{model_file}: shared model exists (use --resume to reuse it, "
                    "--overwrite to refit it)")
            paths = [item.path for i, item in enumerate(items) if rows[i] is None]
            model, feature_extractor = fit_shared_model(
                paths, per_image=per_image, read_kwargs=read_kwargs, progress=progress,
                **_fit_kwargs(segment_kwargs))
            save_shared_model(model_file, model, feature_extractor, overwrite=True)
    if model is not None and feature_extractor is None:
        feature_extractor = stored_feature_extractor(model)

    n_components = (None if model is not None else
                    segment_kwargs.get("n_components", _SEGMENT_DEFAULTS["n_components"]))
    if not isinstance(n_components, (int, np.integer)):
        n_components = None  # "auto" or a list of K: any chosen K is complete
    if resume:
        _remove_stale_temporaries(out_dir, items)
    if resume and not overwrite:
        for i, item in enumerate(items):
            if rows[i] is not None:
                continue
            row = rows[i] = _completed_row(item, out_dir, save_kwargs, n_components)
            if row and row["status"] == "skipped" and thumbnails and not row["thumbnails"]:
                _restore_thumbnails(row, item, out_dir, read_kwargs)

    # Inputs living in an output folder must never be replaced by an output.
    inputs_by_folder: dict[Path, set[str]] = {}
    for item in items:
        real = item.path.resolve()
        inputs_by_folder.setdefault(real.parent, set()).add(str(real))
    work = []
    for i, item in enumerate(items):
        if rows[i] is None:
            folder = (out_dir / item.rel_dir).resolve()
            work.append((i, item, frozenset(inputs_by_folder.get(folder, ()))))

    # With resume, what is left to do has no complete outputs: a part written
    # before an interruption is replaced.
    task = _Task(str(out_dir), segment_kwargs, save_kwargs, read_kwargs, overwrite or resume,
                 threads, model, feature_extractor, thumbnails)
    tracker = _Tracker("segment", len(items), progress,
                       skipped=sum(1 for r in rows if r is not None and r["status"] == "skipped"))
    tracker.failed = sum(1 for r in rows if r is not None and r["status"] == "failed")

    def harvest(index, row):
        if rows[index] is None:
            rows[index] = row

    def record(index, row):
        harvest(index, row)
        tracker.finished(row)

    options = {
        "segment": _jsonable(segment_kwargs), "save": _jsonable(save_kwargs),
        "read": _jsonable(read_kwargs), "jobs": jobs, "threads": threads,
        "scheduler": scheduler, "resume": resume, "overwrite": overwrite,
        "shared_model": _rel(model_file, out_dir) if model_file else None,
        "pretrained_model": model is not None,
    }
    summary = (items, rows, out_dir, t_start, started, options, model_file)
    try:
        tracker.start()
        if not work:
            pass
        elif scheduler is not None:
            _run_dask(work, task, scheduler, jobs, record, harvest)
        elif jobs == 1 or len(work) == 1:
            _run_in_process(work, task, record)
        else:
            _run_processes(work, task, min(jobs, len(work)), record, harvest)
    except KeyboardInterrupt as err:
        raise BatchInterrupted(_finish(*summary, interrupted=True)) from err
    except Exception:
        # E.g. the progress callback failed: keep what finished, then report it.
        _finish(*summary, interrupted=True)
        raise
    return _finish(*summary, interrupted=False)


def _finish(items, rows, out_dir, t_start, started, options, model_file, *, interrupted):
    for i, item in enumerate(items):
        if rows[i] is None:
            row = _blank_row(item)
            row.update(status="cancelled", error="not processed: the batch was interrupted")
            rows[i] = row
    report = BatchReport(rows, out_dir, time.perf_counter() - t_start, interrupted,
                         model_file, options)
    _write_summaries(report, started)
    return report


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


# ---------------------------------------------------------------------------
# summary files
# ---------------------------------------------------------------------------


def _write_summaries(report: BatchReport, started: str) -> None:
    from . import __version__

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
        tmp.write_text(_gallery_html(report, counts, started), encoding="utf-8")


def _csv_row(row: dict) -> dict:
    out = {k: row.get(k) for k in _CSV_COLUMNS if k in row and k not in ("warnings",)}
    out["warnings"] = "; ".join(row["warnings"])
    for kind in _CSV_OUTPUTS:
        out[kind] = row["outputs"].get(kind, "")
    return {k: ("" if v is None else v) for k, v in out.items()}


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left;
         vertical-align: middle; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.thumb { display: block; max-width: 192px; max-height: 192px; background: #eee; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 2px;
          vertical-align: middle; border: 1px solid #0003; }
.failed { color: #a00; }
.shares { font-size: 85%; line-height: 1.6; }
"""


def _href(rel: str) -> str:
    return html.escape(quote(rel, safe="/"), quote=True)


def _gallery_html(report: BatchReport, counts: dict, started: str) -> str:
    esc = html.escape
    done = [r for r in report.rows if r["status"] in ("ok", "skipped")]
    failed = [r for r in report.rows if r["status"] in ("failed", "cancelled")]
    k_max = max((r["n_components"] or 0 for r in done), default=0)
    palette = postprocess.segment_colors(k_max)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gmmseg batch: {esc(report.out_dir.name or str(report.out_dir))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>gmmseg batch</h1>",
        f"<p>{counts['total']} inputs: {counts['ok']} segmented, {counts['skipped']} complete "
        f"from an earlier run, {counts['failed']} failed"
        + (f", {counts['cancelled']} not processed (interrupted)" if counts["cancelled"] else "")
        + f". Started {esc(started)}, {report.seconds:.1f} s. "
        f'<a href="{_href(SUMMARY_CSV)}">CSV</a> · <a href="{_href(SUMMARY_JSON)}">JSON</a>'
        + (f' · <a href="{_href(_rel(report.shared_model, report.out_dir))}">shared model</a>'
           if report.shared_model else "")
        + "</p>",
    ]
    if done:
        parts.append(
            "<h2>Segmented</h2><table><thead><tr><th>input</th><th>image</th>"
            "<th>segments</th><th>size</th><th>K</th><th>EM iterations</th><th>converged</th>"
            "<th>mean log-likelihood</th><th>seconds</th><th>segment shares</th><th>files</th>"
            "</tr></thead><tbody>")
        for r in done:
            name = esc(r["input"])
            cells = [f"<td>{name}" + (" <small>(earlier run)</small>"
                                      if r["status"] == "skipped" else "") + "</td>"]
            for kind in ("input", "overlay"):
                rel = r["thumbnails"].get(kind)
                cells.append(
                    f'<td><img class="thumb" src="{_href(rel)}" alt="{kind} of {name}"></td>'
                    if rel else "<td>–</td>")
            size = "×".join(str(v) for v in (r["width"], r["height"], r["depth"]) if v)
            if r["channels"]:
                size += f" · {r['channels']} ch"
            ll = r["mean_log_likelihood"]
            shares = "".join(
                f'<span class="swatch" style="background:rgb{tuple(int(c) for c in palette[k])}">'
                f"</span>{k}: {100 * s:.1f}%<br>" for k, s in enumerate(r["shares"] or []))
            warn = "".join(f'<br><small class="failed">{esc(w)}</small>' for w in r["warnings"])
            links = " ".join(f'<a href="{_href(rel)}">{esc(kind)}</a>'
                             for kind, rel in r["outputs"].items())
            cells += [
                f"<td>{esc(size)}</td>",
                f'<td class="num">{r["n_components"]}</td>',
                f'<td class="num">{r["n_iter"]}</td>',
                f"<td>{'yes' if r['converged'] else 'no'}{warn}</td>",
                f'<td class="num">{"" if ll is None else f"{ll:.3f}"}</td>',
                f'<td class="num">{r["seconds"]:.2f}</td>' if r["seconds"] is not None
                else "<td></td>",
                f'<td class="shares">{shares}</td>',
                f"<td>{links}</td>",
            ]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    if failed:
        parts.append(f'<h2 class="failed">Not segmented ({len(failed)})</h2>'
                     "<table><thead><tr><th>input</th><th>status</th><th>reason</th></tr>"
                     "</thead><tbody>")
        for r in failed:
            parts.append(f"<tr><td>{esc(r['input'])}</td><td>{esc(r['status'])}</td>"
                         f'<td class="failed">{esc(r["error"])}</td></tr>')
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
