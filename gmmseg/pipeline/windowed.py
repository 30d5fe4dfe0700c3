"""Images larger than memory: segmentation window by window, within a memory budget.

Owns the memory budget (``max_memory``: :func:`check_max_memory`), the
estimate of a file's working set (:func:`working_set`), the window plan
(:func:`plan_windows`: windows aligned to the file's internal blocks, with
a halo for neighbourhood features and the Potts prior), and
:func:`segment_windowed`, which writes a segmentation's files without ever
holding the image:

1. a counting pass over the windows: valid pixels per row (and the whole
   image's mean luminance when ``texture`` is asked for);
2. the fit sample: the same ``max_fit_samples`` random valid pixels that
   :func:`gmmseg.segment` draws (the same generator, the same count, the
   same C order), their raw feature rows read window by window (with the
   halo); the feature standardisation and the mixture are fitted on them
   exactly as the in-memory path fits them, so the model is the same,
   bit for bit;
3. read -> features -> labels (and the maps asked for) -> write, window by
   window, in the calling thread, local threads (``workers``) or on a Dask
   cluster (``scheduler``; :mod:`._window_exec`).

Labels equal the in-memory path's (pixel features and ``texture`` /
``contrast`` through the halo).  With ``smoothing`` the Potts prior runs a
fixed number of mean-field sweeps with the fitted model over each window
and its halo, so labels do not depend on the window layout (no seams);
the model's re-estimation under the prior runs on a mosaic of sample tiles
instead of the whole image, so labels agree with the in-memory path's
closely but not exactly (the README gives the measured agreement).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from dataclasses import dataclass

import numpy as np

from ..errors import GmmsegError, OutputExistsError, counted
from ..io.windows import GDAL_CACHE, gdal_cache
from ._window_exec import connect  # noqa: F401  (batch runs on the same clusters)
from ._window_outputs import PREVIEW_SIZE, output_name, output_names  # noqa: F401 (batch)
from .appearance import sample_rows

#: Default budget ceiling: a quarter of the available memory caps it below.
DEFAULT_MAX_MEMORY = 2 * 1024**3
#: Mean-field sweeps of the windowed Potts prior (the in-memory path runs
#: two per EM iteration until the free energy settles, typically 6 to 8).
WINDOW_SWEEPS = 6
#: Side of the sample tiles the Potts prior's parameters are re-estimated
#: on, and their number: about ``DEFAULT_MAX_FIT_SAMPLES`` pixels.
PRIOR_TILE = 128
PRIOR_TILES = 9
#: The process before any pixel: Python, NumPy, OpenCV, SciPy, rasterio and
#: gmmseg imported take about 110 MiB resident here (130 MiB with
#: dask.distributed); a constant, not the measured RSS, so that the same
#: budget always gives the same windows.
BASELINE = 160 * 1024**2

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_memory(text, name="max_memory") -> int:
    """Bytes from ``"2GB"``, ``"1.5 GiB"``, ``"512M"``, ``"2e9"`` or an integer.

    Decimal units (kB, MB, GB, TB; K, M, G, T alone) are powers of 1000,
    binary ones (KiB, MiB, GiB, TiB) powers of 1024.

    Examples
    --------
    >>> parse_memory("2GB"), parse_memory("1.5GiB"), parse_memory(4096)
    (2000000000, 1610612736, 4096)
    >>> parse_memory("lots")
    Traceback (most recent call last):
    ...
    ValueError: max_memory must be a size such as 2GB, 512MiB or a number of bytes, got 'lots'
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*",
                             str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"{name} must be a size such as 2GB, 512MiB or a number of "
                             f"bytes, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {text!r}")
    return value


def available_memory() -> int | None:
    """Memory the system can give without swapping (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_max_memory(value=None) -> int:
    """The memory budget in bytes: ``value`` parsed, or the default.

    The default is :data:`DEFAULT_MAX_MEMORY` (2 GiB) or a quarter of the
    available memory, whichever is smaller, so that ``batch -j N`` on a
    loaded machine stays safe.
    """
    if value is None:
        available = available_memory()
        return DEFAULT_MAX_MEMORY if available is None else min(DEFAULT_MAX_MEMORY,
                                                                available // 4)
    return parse_memory(value)


def format_bytes(n: float) -> str:
    """``'1.5 GiB'``, ``'640 MiB'``, ``'12 KiB'``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def bytes_per_pixel(n_channels, itemsize, n_features, n_components, *, smoothing=False,
                    neighbourhood=False, maps=0) -> int:
    """Bytes one pixel costs while it is being segmented (the working set's slope).

    The pixel's data and validity, its feature row twice (the raw block a
    builder returns and the matrix row), the mixture's per-component log
    densities and responsibilities (``8 K``), labels and log-likelihood
    before and after they are put back on the grid (16), with ``smoothing``
    the prior's fields (``12 K``), with ``texture`` / ``contrast`` their
    float32 temporaries (24), and ``maps`` float32 values per pixel for the
    maps written.
    """
    size = n_channels * itemsize + 1 + 8 * n_features + 8 * n_components + 16 + 4 * maps
    if smoothing:
        size += 12 * n_components
    if neighbourhood:
        size += 24
    return int(size)


def working_set(shape, per_pixel) -> int:
    """Bytes the in-memory path needs for an image of spatial ``shape``."""
    return int(math.prod(shape)) * int(per_pixel)


@dataclass
class WindowPlan:
    """Windows covering an image: ``cores`` tile it, ``outers`` add the halo (clipped)."""

    shape: tuple
    window: tuple
    halo: tuple
    cores: list
    outers: list
    per_pixel: int
    budget: int

    def __len__(self):
        return len(self.cores)

    def describe(self) -> str:
        size = " x ".join(str(n) for n in self.window)
        return (f"{counted(len(self), 'window')} of {size} pixels (halo "
                f"{max(self.halo)} px), {format_bytes(self.budget)} budget")


def _extent(core, halo, shape):
    """The core with its halo, clipped to the image; it starts on an even index so that the
    Potts prior's parity classes (2 x 2 colouring) are the whole image's."""
    return tuple((max(0, a - h - (a - h) % 2), min(n, b + h))
                 for (a, b), h, n in zip(core, halo, shape))


def plan_windows(shape, block, per_pixel, budget, halo, *, size=None, where=""):
    """Windows of whole blocks, as large as ``budget`` bytes allows with their halo.

    Parameters
    ----------
    shape, block : tuple of int
        Spatial shape and the file's internal block (per axis).
    per_pixel : int
        Bytes per pixel of a window (:func:`bytes_per_pixel`).
    budget : int
        Bytes one window (core and halo) may take.
    halo : tuple of int
        Pixels of context each side, per axis.
    size : int, optional
        Window side in pixels instead of the largest the budget allows
        (rounded up to whole blocks; volumes: slices per slab).

    Raises
    ------
    GmmsegError
        Not even one block with its halo fits the budget.

    Examples
    --------
    >>> plan = plan_windows((1000, 1000), (256, 256), 100, 30_000_000, (8, 8))
    >>> len(plan), plan.window
    (4, (512, 512))
    """
    block = tuple(min(b, n) for b, n in zip(block, shape))
    # Volumes are cut into slabs of whole slices (the features work on slices).
    if len(shape) == 3:
        block = (block[0],) + tuple(shape[1:])

    def cost(window):
        return math.prod(min(n, w + 2 * h) for w, h, n in zip(window, halo, shape)) * per_pixel

    window = list(block)
    if size is not None:
        axes = 1 if len(shape) == 3 else len(shape)
        window = [min(n, max(b, -(-int(size) // b) * b)) if a < axes else b
                  for a, (b, n) in enumerate(zip(block, shape))]
    elif cost(window) > budget:
        size = " x ".join(str(b) for b in block)
        raise GmmsegError(
            f"{where}max_memory={format_bytes(budget)} per window is too small: one "
            f"{size} block with its {max(halo)} px halo needs about "
            f"{format_bytes(cost(window))}; raise max_memory")
    growing = size is None
    while growing:
        growing = False
        for axis in sorted(range(len(shape)), key=lambda a: window[a]):
            if window[axis] >= shape[axis]:
                continue
            bigger = list(window)
            bigger[axis] = min(shape[axis], window[axis] + block[axis])
            if cost(bigger) <= budget:
                window, growing = bigger, True
                break
    ranges = [[(a, min(a + w, n)) for a in range(0, n, w)] for w, n in zip(window, shape)]
    cores = [tuple(c) for c in itertools.product(*ranges)]
    outers = [_extent(c, halo, shape) for c in cores]
    return WindowPlan(tuple(shape), tuple(window), tuple(halo), cores, outers, per_pixel, budget)


def feature_halo(items, spacing, ndim) -> tuple[int, ...]:
    """Pixels of context per axis that ``texture`` / ``contrast`` need to equal the whole image's.

    OpenCV's and SciPy's Gaussian kernels reach ``4 sigma`` (per axis, in
    units of the finest spacing), ``texture``'s gradient one pixel more.
    """
    sigma = 0.0
    for item in items:
        if item.name == "texture":
            sigma = max(sigma, max(item.params.get("sigmas", (1.0, 2.0, 4.0))))
        elif item.name == "contrast":
            sigma = max(sigma, float(item.params.get("sigma", 16.0)))
    if sigma == 0.0:
        return (0,) * ndim
    spacing = spacing or (1.0,) * ndim
    finest = min(spacing)
    return tuple(math.ceil(4.0 * sigma * finest / s) + 2 for s in spacing)


def prior_halo(ndim, sweeps=WINDOW_SWEEPS) -> tuple[int, ...]:
    """Context of ``sweeps`` mean-field sweeps: each parity-class update reaches one pixel further."""
    return (sweeps * 2**ndim + 1,) * ndim


def elapsed(t0):
    return time.perf_counter() - t0


# -- the run ------------------------------------------------------------------------


def _check_request(where, min_region_size, regions, items, max_fit_samples):
    """Refuse, in one line, what the windowed path cannot do."""
    if min_region_size and min_region_size > 1:
        raise GmmsegError(f"{where}min_region_size needs the whole label map at once; the image "
                          "is beyond max_memory (raise max_memory, or leave min_region_size 0)")
    if regions not in (None, "off", "auto"):
        raise GmmsegError(f"{where}connected regions are not computed for images beyond "
                          "max_memory (regions merge across the whole map); use regions='off' "
                          "or raise max_memory")
    for item in items:
        if item.func is not None:
            raise GmmsegError(f"{where}custom feature {item.name!r} needs the whole image; the "
                              "image is beyond max_memory (use named features or raise it)")
    if max_fit_samples is None:
        raise GmmsegError(f"{where}max_fit_samples=None fits on every pixel, which an image "
                          "beyond max_memory cannot hold; give a number of pixels")


def _grid_rows(plan):
    """Column ranges of the windows (2-D), the counting pass's second axis."""
    if len(plan.shape) == 3:
        return [(0, plan.shape[-1])]
    return sorted({core[1] for core in plan.cores})


def _count_valid(source, plan, want_luminance, run):
    """Valid pixels per image row and window column, and the valid pixels' luminance sum.

    Returns ``(counts, luminance_sum)``: ``counts`` is ``(rows, window
    columns)`` int64, rows being the image seen as ``(prod(shape[:-1]),
    W)`` in C order.
    """
    columns = _grid_rows(plan)
    n_rows = math.prod(plan.shape[:-1])
    counts = np.zeros((n_rows, len(columns)), np.int64)
    if source.all_valid and not want_luminance:
        for j, (c0, c1) in enumerate(columns):
            counts[:, j] = c1 - c0
        return counts, 0.0
    from ._window_work import count_window

    total = [0.0]

    def consume(result):
        core, per_row, lum = result
        rows = _row_range(core, plan.shape)
        counts[rows[0]:rows[1], columns.index(core[-1]) if len(core) == 2 else 0] = per_row
        total[0] += lum

    run(count_window, [(core, want_luminance) for core in plan.cores], consume)
    return counts, total[0]


def _row_range(core, shape):
    """First and last-plus-one row (in the ``(prod(shape[:-1]), W)`` view) a window covers."""
    if len(shape) == 3:
        per = shape[1]
        return core[0][0] * per, core[0][1] * per
    return core[0]


def _locate(index, counts):
    """Global positions ``(n, ndim)`` of the valid pixels numbered ``index`` in C order."""
    per_row = counts.sum(axis=1)
    row_end = np.cumsum(per_row)
    rows = np.searchsorted(row_end, index, side="right")
    rank = index - (row_end[rows] - per_row[rows])
    col_end = np.cumsum(counts, axis=1)[rows]
    window_col = (col_end <= rank[:, None]).sum(axis=1)
    rank_in = rank - (col_end[np.arange(len(rows)), window_col] - counts[rows, window_col])
    return rows, window_col, rank_in



def _gather_sample(plan, counts, index, run):
    """Raw feature rows of the valid pixels numbered ``index``, gathered window by window."""
    from ._window_work import sample_rows

    columns = _grid_rows(plan)
    rows, window_col, ranks = _locate(index, counts)
    jobs = []
    for core, outer in zip(plan.cores, plan.outers):
        r0, r1 = _row_range(core, plan.shape)
        j = columns.index(core[-1]) if len(core) == 2 else 0
        here = np.flatnonzero((rows >= r0) & (rows < r1) & (window_col == j))
        if len(here):
            jobs.append((core, outer, rows[here] - r0, ranks[here], here))
    out = []

    def consume(result):
        place, X = result
        if not out:
            out.append(np.empty((len(index), X.shape[1]), np.float32))
        out[0][place] = X

    run(sample_rows, jobs, consume)
    return out[0]


def _window_extractor(fitted, offset):
    """A copy of the fitted extractor whose ``texture`` uses the whole image's ``offset``."""
    import copy

    from ..features import FeatureItem

    wx = copy.copy(fitted)
    wx.items_ = [FeatureItem(i.name, i.weight, {**i.params, "offset": offset})
                 if i.name == "texture" and i.func is None and offset is not None else i
                 for i in fitted.items_]
    return wx


def _prior_tiles(shape):
    """Corners of the sample tiles the Potts prior's parameters are estimated on (spread evenly)."""
    if len(shape) == 2:
        side = [min(PRIOR_TILE, n) for n in shape]
        grid = round(math.sqrt(PRIOR_TILES))
        return side, [tuple(int((f + 0.5) / grid * (n - s)) for f, n, s in
                            zip((i, j), shape, side)) for i in range(grid) for j in range(grid)]
    side = [min(PRIOR_TILE // 2, n) for n in shape]
    return side, [(int((t + 0.5) / 4 * (shape[0] - side[0])),
                   (shape[1] - side[1]) // 2, (shape[2] - side[2]) // 2) for t in range(4)]


def _prior_model(task, plan, halo, fit_args, smoothing, connectivity, spacing, tol):
    """The mixture with the Potts prior's parameters, estimated on a mosaic of sample tiles.

    The tiles' features (computed with the halo) are stacked along the first
    axis, separated by invalid gaps wider than any neighbourhood the start
    (:func:`gmmseg.mrf.local_mean`) or the prior looks at, and the in-memory
    path's procedure runs on the mosaic: a mixture of locally averaged
    features, one M-step on the real ones, HMRF-EM.
    """
    from .. import mrf
    from ._window_work import _core_slices, _read
    from ._window_work import _window_extractor as _placed

    side, corners = _prior_tiles(plan.shape)
    gap = 8
    grids, valids = [], []
    for corner in corners:
        core = tuple((c, c + s) for c, s in zip(corner, side))
        outer = _extent(core, halo, plan.shape)
        img = _read(task, outer)
        inner = _core_slices(core, outer)
        X = _placed(task.extractor, outer, plan.shape).transform(img)
        grid = np.zeros(img.valid.shape + (X.shape[1],), np.float32)
        grid[img.valid] = X
        grids.append(grid[inner])
        valids.append(img.valid[inner])
        pad = (gap,) + tuple(side[1:])
        grids.append(np.zeros(pad + (X.shape[1],), np.float32))
        valids.append(np.zeros(pad, bool))
    valid = np.concatenate(valids)
    X = np.ascontiguousarray(np.concatenate(grids)[valid])
    if not len(X):
        raise GmmsegError(f"{task.path}: the Potts prior's sample tiles hold no valid pixel")
    model, selection, _ = _start_model(X, valid, spacing, fit_args)
    mrf.hmrf_em(model, X, valid, float(smoothing), connectivity=connectivity, spacing=spacing,
                tol=tol)
    model.sort_components()
    return model, selection, len(X)


def _segment_windowed(path, out_dir, stem=None, *, n_components=4, features="auto",
                     covariance_type="full", random_state=0, max_fit_samples=None,
                     standardize=True, pca=None, smoothing=0.0, connectivity=None,
                     init_params="k-means++", n_init=1, max_iter=100, tol=1e-3, reg_covar=1e-6,
                     n_jobs=None, criterion="bic", bands=None, nodata=None, volume=None,
                     max_memory=None, workers=1, scheduler=None, processes=True,
                     save_proba=False, save_loglik=False, alpha=0.5, overwrite=False,
                     min_region_size=0, regions="off", progress=None, window_size=None,
                     preset_record=None):
    """Segment an image file window by window and write its results; never hold the image.

    Arguments as :func:`gmmseg.segment` (same defaults; the same seed gives
    the same model and labels), plus:

    Parameters
    ----------
    path : path
        GeoTIFF or other raster, plain TIFF, ``.npy`` or NIfTI volume
        (:func:`gmmseg.io.windows.open_windows`).
    out_dir : path
        Existing folder for ``STEM_labels.tif`` (a cloud-optimised GeoTIFF;
        ``.nii.gz`` for NIfTI), ``STEM_proba.tif`` / ``STEM_loglik.tif``
        (``save_proba`` / ``save_loglik``; tiled float32 GeoTIFF),
        ``STEM_overlay.png`` (a preview, at most 2048 px on the longest
        side; 2-D inputs) and ``STEM_report.json`` (written last).
    stem : str, optional
        Default: the file name without its suffix.
    max_memory : int or str, optional
        Budget in bytes (or ``"2GB"``); default :func:`check_max_memory`.
        Windows are sized so that the process stays within it.
    workers, scheduler, processes :
        Windows at once (threads, or a local Dask cluster's workers); ``"local"``,
        an address or a ``distributed.Client`` to run windows as Dask tasks; a
        local cluster of processes (True) or threads.
    progress : callable, optional
        ``progress(done, total)`` after each labelled window.
    window_size : int, optional
        Window side in pixels (whole blocks; slices for volumes) instead of
        the largest that ``max_memory`` allows.
    preset : str, optional
        A mixture preset (``photo``, ``fluorescence``), as :func:`gmmseg.segment`
        takes it; explicit arguments win.

    Returns
    -------
    dict
        The report (also written as ``STEM_report.json``).

    Raises
    ------
    GmmsegError
        One line naming the file: the budget cannot hold one window, a
        request the windowed path cannot honour (``min_region_size``,
        connected regions, custom feature callables), no valid pixel.
    """
    from ..features import FeatureExtractor
    from ..io import file_stem
    from ..io.windows import open_windows
    from ._window_exec import window_runner
    from ._window_work import WindowTask
    from .segment import DEFAULT_MAX_FIT_SAMPLES, candidate_ks

    t0, timings = time.perf_counter(), {}
    max_fit_samples = DEFAULT_MAX_FIT_SAMPLES if max_fit_samples is None else max_fit_samples
    where = f"{path}: "
    budget = check_max_memory(max_memory)
    k_values = candidate_ks(n_components)
    stem = stem or file_stem(path)
    _check_outputs(out_dir, stem, overwrite)
    options = dict(bands=bands, nodata=nodata, volume=volume)
    with open_windows(path, **options) as source:
        options = source.options
        extractor = FeatureExtractor(features, standardize=standardize, pca=pca)
        probe = source.read(tuple((0, min(8, n)) for n in source.shape))
        items = extractor.resolved_items(probe)
        _check_request(where, min_region_size, regions, items, max_fit_samples)
        n_features = extractor.raw_rows(probe, items=items).shape[1]
        if source.meta.get("format") == "nifti" and (save_proba or save_loglik):
            raise GmmsegError(f"{where}probability and log-likelihood maps of a volume beyond "
                              "max_memory are not written; raise max_memory")
    k_max = k_values[-1] if k_values else int(n_components)
    plan = _plan(source, items, n_features, k_max, smoothing, save_proba, save_loglik, budget,
                 workers, max_fit_samples, where, window_size)
    task = WindowTask(str(path), options, source.shape, extractor, items)

    with gdal_cache(), window_runner(workers=workers, scheduler=scheduler,
                                      processes=processes) as runner:

        def run(fn, jobs, consume, **kwargs):
            runner(fn, task, jobs, consume, **kwargs)

        t = time.perf_counter()
        raw, n_valid, offset = _fit_sample(source, plan, items, max_fit_samples, random_state,
                                           where, run)
        timings["sample"] = elapsed(t)
        t = time.perf_counter()
        X_fit = extractor.fit_rows(raw, probe)
        task.extractor, task.items = _window_extractor(extractor, offset), None
        params = dict(covariance_type=covariance_type, random_state=random_state,
                      init_params=init_params, n_init=n_init, max_iter=max_iter, tol=tol,
                      reg_covar=reg_covar, n_jobs=n_jobs)
        fit_args = (n_components, k_values, smoothing, where, criterion, params)
        model, selection, fit_samples = _fit(task, plan, X_fit, fit_args, smoothing,
                                             connectivity, source.spacing, tol)
        del X_fit, raw
        timings["fit"] = elapsed(t)
        t = time.perf_counter()
        report = _label_all(task, plan, model, source, out_dir, stem, run, progress,
                            smoothing=smoothing, connectivity=connectivity, proba=save_proba,
                            loglik=save_loglik, alpha=alpha, overwrite=overwrite)
        timings["label"] = elapsed(t)
    timings["total"] = elapsed(t0)
    from ._window_outputs import finish_report

    run_info = {"random_state": random_state, "smoothing": float(smoothing or 0.0),
                "workers": workers, "scheduler": scheduler and str(scheduler),
                "max_memory": budget, "prior_sweeps": smoothing and WINDOW_SWEEPS,
                "preset": preset_record}
    return finish_report(report, source, extractor, model, n_valid, fit_samples, selection,
                         plan, timings, out_dir, stem, overwrite, run_info)


def _check_outputs(out_dir, stem, overwrite):
    """Make ``out_dir``; refuse, before any work, outputs that exist (without ``overwrite``)."""
    os.makedirs(out_dir, exist_ok=True)
    if overwrite:
        return
    # The other files' writers refuse theirs when they start.
    for name in output_names(stem, ["labels", "labels_volume", "report"]):
        if os.path.lexists(os.path.join(out_dir, name)):
            raise OutputExistsError(f"{os.path.join(out_dir, name)}: output file "
                                    "exists (use overwrite=True to replace it)")


def _fit_sample(source, plan, items, max_fit_samples, random_state, where, run):
    """Raw feature rows of the fit sample, the valid pixel count, the texture offset."""
    wants_offset = any(i.name == "texture" for i in items)
    counts, lum_sum = _count_valid(source, plan, wants_offset, run)
    n_valid = int(counts.sum())
    if n_valid == 0:
        raise GmmsegError(f"{where}no valid pixels to segment (all masked, NaN or nodata)")
    # The in-memory path's draw (the same pixels, so the same model).
    index = sample_rows(n_valid, max_fit_samples, random_state)
    if index is None:
        index = np.arange(n_valid, dtype=np.int64)
    raw = _gather_sample(plan, counts, index, run)
    return raw, n_valid, (lum_sum / n_valid if wants_offset else None)


def _plan(source, items, n_features, n_components, smoothing, proba, loglik, budget, workers,
          max_fit_samples, where, size=None):
    """The window plan within ``budget``: what the process holds besides windows comes off first."""
    ndim = len(source.shape)
    neighbourhood = any(i.name in ("texture", "contrast") for i in items)
    maps = (n_components if proba else 0) + (1 if loglik else 0)
    per_pixel = bytes_per_pixel(source.n_channels, source.dtype.itemsize, n_features,
                                n_components, smoothing=bool(smoothing),
                                neighbourhood=neighbourhood, maps=maps)
    halo = feature_halo(items, source.spacing, ndim)
    if smoothing:
        halo = tuple(h + p for h, p in zip(halo, prior_halo(ndim)))
    preview = min(math.prod(source.shape), PREVIEW_SIZE**2) * (
        source.n_channels * source.dtype.itemsize + 5)
    fixed = (BASELINE + GDAL_CACHE + preview
             + int(max_fit_samples) * (12 * n_features + 8 * n_components))
    if ndim == 3:
        fixed += math.prod(source.shape) * 2
    if smoothing:
        fixed += PRIOR_TILE**2 * PRIOR_TILES * per_pixel
    per_window = (budget - fixed) // max(1, workers)
    if per_window <= 0 and size is None:
        raise GmmsegError(
            f"{where}max_memory={format_bytes(budget)} is too small: the process needs about "
            f"{format_bytes(fixed)} besides the windows (libraries, fit sample, preview); "
            "raise max_memory")
    return plan_windows(source.shape, source.block, per_pixel, per_window, halo, size=size,
                        where=where)


#: Criteria the windowed path chooses K by: the density sweep on the fit
#: sample.  Criteria that count clusters of the image's appearance are the
#: in-memory path's; a windowed run with them chooses by BIC.
DENSITY_CRITERIA = ("bic", "aic")


def _start_model(X, valid, spacing, fit_args):
    """The mixture a fit starts from: K fixed or chosen on ``X``; with ``valid`` (the prior's
    mosaic), fitted on locally averaged features and re-estimated on ``X`` once, as the
    in-memory path starts the Potts prior.  Returns ``(model, selection, fit_samples)``."""
    from .segment import fit_for_segment, select_on_fit_sample

    n_components, k_values, _, where, criterion, params = fit_args
    selection = None
    if k_values is not None:
        density = criterion if criterion in DENSITY_CRITERIA else "bic"
        selection = select_on_fit_sample(X, k_values, where, density, params, None)
    model, fit_samples = fit_for_segment(X, valid, spacing, n_components, selection,
                                         valid is not None, where, params, None)
    return model, selection, fit_samples


def _fit(task, plan, X_fit, fit_args, smoothing, connectivity, spacing, tol):
    """``(model, selection, fit_samples)`` from the fit sample (and the prior's tiles)."""
    if smoothing:
        return _prior_model(task, plan, plan.halo, fit_args, smoothing, connectivity,
                            spacing, tol)
    return _start_model(X_fit, None, spacing, fit_args)


def _label_all(task, plan, model, source, out_dir, stem, run, progress, *, smoothing,
               connectivity, proba, loglik, alpha, overwrite):
    """Label every window and write the files; returns their paths and tallies."""
    from ._window_outputs import WindowOutputs
    from ._window_work import label_window

    step = max(1, -(-max(source.shape) // PREVIEW_SIZE))

    outputs = WindowOutputs(source, out_dir, stem, model.n_components, proba=proba,
                       log_likelihood=loglik, overwrite=overwrite, preview_step=step)
    task.model = model
    task.smoothing = ((float(smoothing), connectivity, WINDOW_SWEEPS, source.spacing)
                      if smoothing else None)
    task.proba, task.log_likelihood = proba, loglik
    task.label_dtype, task.nodata = outputs.dtype.name, outputs.nodata
    task.preview_step = None if outputs.volume else step
    try:
        run(label_window, list(zip(plan.cores, plan.outers)), outputs.add, progress=progress)
        outputs.finish(alpha, overwrite)
    except BaseException:
        outputs.abort()
        raise
    return {"paths": dict(outputs.paths), "counts": outputs.counts, "ll_sum": outputs.ll_sum,
            "colors": outputs.colors}


def needs_windows(path, *, max_memory=None, features="auto", n_components=4, smoothing=0.0,
                  save_proba=False, save_loglik=False, bands=None, nodata=None, volume=None,
                  pca=None, preset=None, **_):
    """Whether segmenting ``path`` in memory would exceed ``max_memory``.

    The working set is estimated from the file's header: pixels times
    :func:`bytes_per_pixel` for its bands, dtype, features, K (the largest
    candidate for ``"auto"``), smoothing and maps, plus :data:`BASELINE`.
    Files that cannot be read window by window (PNG, JPEG, DICOM, TIFF
    layouts that need the whole image) are always segmented in memory: False.
    """
    from ..features import FeatureExtractor
    from ..io.windows import open_windows
    from .segment import candidate_ks

    budget = check_max_memory(max_memory)
    if preset not in (None, "auto"):
        from .presets import preset_arguments

        arguments, _ = preset_arguments(preset, {})
        if features == "auto":
            features = arguments.get("features", "auto")
        smoothing = smoothing or arguments.get("smoothing", 0.0)
    try:
        with open_windows(path, bands=bands, nodata=nodata, volume=volume) as source:
            probe = source.read(tuple((0, min(8, n)) for n in source.shape))
        extractor = FeatureExtractor(features, pca=pca)
        items = extractor.resolved_items(probe)
        n_features = extractor.raw_rows(probe, items=items).shape[1] if all(
            i.func is None for i in items) else source.n_channels
    except Exception:
        # Unreadable, damaged or unsuitable here: the in-memory path says what is wrong.
        return False
    ks = candidate_ks(n_components)
    k = ks[-1] if ks else int(n_components)
    per_pixel = bytes_per_pixel(
        source.n_channels, source.dtype.itemsize, n_features, k, smoothing=bool(smoothing),
        neighbourhood=any(i.name in ("texture", "contrast") for i in items),
        maps=(k if save_proba else 0) + (1 if save_loglik else 0))
    return BASELINE + working_set(source.shape, per_pixel) > budget


def with_windowed_presets(fn):
    """Give :func:`segment_windowed` ``preset=`` as :func:`gmmseg.segment` has it (mixture presets)."""
    import functools
    import inspect

    accepted = set(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def wrapper(path, out_dir, stem=None, *, preset=None, **kwargs):
        if preset in (None, "auto"):
            return fn(path, out_dir, stem, **kwargs)
        from .presets import preset_arguments

        arguments, record = preset_arguments(preset, kwargs, accepted, method="mixture",
                                             what="the windowed path (an image beyond "
                                                  "max_memory)")
        return fn(path, out_dir, stem, preset_record=record, **arguments)

    return wrapper


segment_windowed = with_windowed_presets(_segment_windowed)
