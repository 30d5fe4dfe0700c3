"""The work of one window of :mod:`gmmseg.pipeline.windowed`, as a picklable task.

Owns what a worker (the calling thread, a local thread or a Dask worker)
does with a window: read it with its halo, build its features with the
fitted extractor, and return either the raw feature rows of the fit
sample's pixels in it (:func:`sample_rows`) or its labels, optional maps,
per-segment counts and preview pixels (:func:`label_window`).  Each task
opens the file itself (a rasterio dataset is neither picklable nor
thread-safe) and keeps nothing between calls.  No planning, no writing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import mrf
from ..io.windows import gdal_cache, open_windows


@dataclass
class WindowTask:
    """What every window task needs; scattered once to a Dask cluster.

    ``extractor`` is the fitted feature extractor with the whole image's
    ``texture`` offset in its items (None while gathering the sample, with
    ``items`` the raw spec); ``smoothing`` is ``(beta, connectivity,
    sweeps)`` or None.
    """

    path: str
    options: dict
    shape: tuple = ()
    extractor: object = None
    items: list = None
    model: object = None
    smoothing: tuple | None = None
    proba: bool = False
    log_likelihood: bool = False
    label_dtype: str = "uint8"
    nodata: int = 255
    preview_step: int = 1


@dataclass
class WindowResult:
    """One window's labels (the core, label dtype, nodata where invalid) and tallies."""

    core: tuple
    labels: np.ndarray
    proba: np.ndarray | None
    log_likelihood: np.ndarray | None
    counts: np.ndarray
    log_likelihood_sum: float
    preview: tuple | None


def _read(task: WindowTask, outer):
    # A Dask worker process has GDAL's default cache (5% of the RAM) otherwise.
    with gdal_cache(), open_windows(task.path, **task.options) as source:
        return source.read(outer)


def _at_window(items, outer, shape):
    """``items`` with ``position`` placed in the whole image (origin and full shape)."""
    from ..features import FeatureItem

    return [FeatureItem(i.name, i.weight, {**i.params, "origin": tuple(a for a, _ in outer),
                                           "full_shape": tuple(shape)})
            if i.name == "position" and i.func is None else i for i in items]


def _window_extractor(extractor, outer, shape):
    """The fitted extractor with its ``position`` placed at ``outer``."""
    if not any(i.name == "position" for i in extractor.items_):
        return extractor
    import copy

    placed = copy.copy(extractor)
    placed.items_ = _at_window(extractor.items_, outer, shape)
    return placed


def _core_slices(core, outer):
    return tuple(slice(c0 - o0, c1 - o0) for (c0, c1), (o0, _) in zip(core, outer))


def count_window(task: WindowTask, core, luminance):
    """Valid pixels per row of the ``core`` window (rows of its ``(-1, W)`` view), and
    the sum of their luminance (float64) when ``luminance``."""
    img = _read(task, core)
    rows = img.valid.reshape(-1, img.valid.shape[-1])
    total = 0.0
    if luminance:
        from ..features import FEATURE_BUILDERS

        lum = FEATURE_BUILDERS["gray"](img)[..., 0]
        total = float(np.sum(lum[img.valid], dtype=np.float64))
    return core, rows.sum(axis=1), total


def sample_rows(task: WindowTask, core, outer, rows, ranks, place):
    """Raw feature rows of the fit sample's pixels in the ``core`` window.

    The pixels are given as the ``ranks``-th valid pixel of the core's rows
    ``rows`` (rows of its ``(-1, W)`` view).  Features are computed over
    ``outer`` (the core and its halo), so that neighbourhood features equal
    the whole image's.  Returns ``(place, (n, D) float32 rows)``, the rows
    in the order given and ``place`` passed through.
    """
    img = _read(task, outer)
    inner = _core_slices(core, outer)
    core_valid = img.valid[inner]
    per_row = core_valid.reshape(-1, core_valid.shape[-1]).sum(axis=1)
    first = np.cumsum(per_row) - per_row
    flat = np.flatnonzero(core_valid)[first[rows] + ranks]
    local = np.unravel_index(flat, core_valid.shape)
    at = tuple(x + s.start for x, s in zip(local, inner))
    # Row of each valid pixel of the outer window in the feature matrix (C order).
    index = np.cumsum(img.valid.ravel(), dtype=np.int64) - 1
    X = task.extractor.raw_rows(img, items=_at_window(task.items, outer, task.shape))
    return place, X[index[np.ravel_multi_index(at, img.valid.shape)]]


def _unary_field(task, X, valid):
    beta, connectivity, sweeps, spacing = task.smoothing
    field = mrf.PottsField(mrf._unary(task.model, X, valid), valid, beta,
                           connectivity=connectivity, spacing=spacing)
    field.sweep(sweeps)
    return field.q


def label_window(task: WindowTask, core, outer) -> WindowResult:
    """Labels (and maps) of the ``core`` window, computed over ``outer``."""
    img = _read(task, outer)
    valid = img.valid
    inner = _core_slices(core, outer)
    n_components = task.model.n_components
    extractor = _window_extractor(task.extractor, outer, task.shape)
    X = extractor.transform(img) if valid.any() else None
    labels = np.full(valid.shape, -1, np.int32)
    proba = loglik = None
    ll_sum = 0.0
    if X is not None:
        smoothed = task.smoothing is not None and task.smoothing[0] > 0
        result = task.model.e_step(X, labels=not smoothed, proba=task.proba and not smoothed,
                                   log_likelihood=True)
        if smoothed:
            q = _unary_field(task, X, valid)
            labels[valid] = q.argmax(axis=0)[valid]
            if task.proba:
                proba = np.moveaxis(q, 0, -1)[inner].astype(np.float32)
        else:
            labels[valid] = result.labels
            if task.proba:
                proba = np.zeros(valid.shape + (n_components,), np.float32)
                proba[valid] = result.proba
                proba = proba[inner]
        ll = np.full(valid.shape, np.nan, np.float32)
        ll[valid] = result.log_likelihood
        ll = ll[inner]
        ll_sum = float(np.nansum(ll, dtype=np.float64))
        loglik = ll if task.log_likelihood else None
    elif task.proba:
        proba = np.zeros(tuple(b - a for a, b in core) + (n_components,), np.float32)
    if task.log_likelihood and loglik is None:
        loglik = np.full(tuple(b - a for a, b in core), np.nan, np.float32)
    labels = labels[inner]
    if proba is not None:
        proba[labels < 0] = np.nan
    counts = np.bincount(labels[labels >= 0], minlength=n_components)
    out = np.where(labels >= 0, labels, task.nodata).astype(task.label_dtype)
    return WindowResult(core, out, proba, loglik, counts, ll_sum,
                        _preview(task, img, inner, core, labels))


def _preview(task, img, inner, core, labels):
    """Every ``preview_step``-th pixel of the core on the global grid, for the overview picture."""
    step = task.preview_step
    if step is None or len(core) != 2:
        return None
    starts = [(-c0) % step for c0, _ in core]
    grid = tuple(slice(s, None, step) for s in starts)
    data = img.data[inner][grid]
    where = tuple((c0 + s) // step for (c0, _), s in zip(core, starts))
    return where, data, img.valid[inner][grid], labels[grid]
