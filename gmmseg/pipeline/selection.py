"""How many segments: the image-level K sweep and its plot.

:func:`select_k` runs the K choice of ``segment(image, "auto")``
(:func:`~gmmseg.pipeline.segment.choose_k`): a sweep of the model's features
on the fit sample (the density: BIC, AIC) and a count of the clusters of
the pixels' appearance (ICL on the de-quantised colours, see
:mod:`gmmseg.pipeline.appearance`); :func:`plot_selection` draws both
curves and the choice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..features import FeatureExtractor
from ..io import atomic_output
from ..mixture import CLEAR_ENTROPY, check_criterion, check_n_components
from .segment import DEFAULT_CRITERION, DEFAULT_MAX_FIT_SAMPLES, choose_k, read_valid

logger = logging.getLogger(__name__)

_PLOT_HINT = "install it with: pip install 'gmmseg[plot]'"


def select_k(
    image,
    k_min=1,
    k_max=10,
    *,
    criterion=DEFAULT_CRITERION,
    covariance_types=("full",),
    features="auto",
    standardize=True,
    pca=None,
    mask=None,
    random_state=0,
    max_fit_samples=DEFAULT_MAX_FIT_SAMPLES,
    init_params="k-means++",
    n_init=1,
    max_iter=100,
    tol=1e-3,
    reg_covar=1e-6,
    n_jobs=None,
    channel_axis=-1,
    spacing=None,
):
    """How many segments: fit a mixture for each K in ``k_min..k_max``, choose one.

    Two sweeps, with work shared between K (:func:`gmmseg.mixture.select_k`):

    * the density: mixtures of ``features`` on the random valid pixels
      :func:`segment` fits on with the same arguments, with BIC and AIC on
      them (lower is better).  On photos BIC keeps falling to the largest K:
      pixel colours and positions are no Gaussian mixture, and more
      components always fit them better;
    * the count: mixtures of the pixels' appearance -- ``features`` without
      ``position``, colour as R, G, B, integer values de-quantised
      (:mod:`gmmseg.pipeline.appearance`) -- on 5,000 of those pixels, with
      ICL, BIC plus twice the entropy of the responsibilities, which counts
      the clusters that stand apart (Biernacki, Celeux & Govaert 2000).

    With ``criterion="auto"`` K is the count where its clusters are clear
    (their mean classification entropy at most 0.1 nats per pixel,
    :data:`gmmseg.mixture.CLEAR_ENTROPY`): the segments a person would draw
    on images whose segments are clear.  Elsewhere (natural photos, whose
    colours vary without gaps) there is no clear count, and K is BIC's, a
    fine set of components that connected regions then merge.
    ``segment(image, n_components="auto")`` makes the same choice and
    labels with the chosen mixture of the density sweep.

    Parameters
    ----------
    image : Image, ndarray or path
        As for :func:`segment`.
    k_min, k_max : int, default 1 and 10
        The K tried: ``k_min..k_max`` inclusive.
    criterion : {"auto", "icl", "bic", "aic"}, default="auto"
        "auto" as above; "icl" the count whether clear or not; "bic" and
        "aic" the density sweep's choice.
    covariance_types : str or sequence of str, default=("full",)
        Also choose among these covariance types (each is fitted for every
        K of the density sweep; the count uses the chosen one).
    features, standardize, pca, mask, random_state, max_fit_samples, channel_axis, spacing :
        As for :func:`segment`.
    init_params, n_init, max_iter, tol, reg_covar, n_jobs :
        Passed to :class:`~gmmseg.mixture.GaussianMixture`.

    Returns
    -------
    SelectKResult
        The density sweep: ``rows`` (one per K: log-likelihood, BIC, AIC,
        entropy, ICL, iterations, seconds), the chosen ``n_components`` and
        ``covariance_type``, its fitted ``model`` (components in canonical
        order) and ``features`` (the fitted
        :class:`~gmmseg.features.FeatureExtractor`); ``count``, the count's
        own result (its ``rows``, ``clear``, ``best_by("icl")``); ``info``
        with ``n_valid``, ``fit_samples``, ``decided_by`` ("count", "bic"
        or "aic"), ``count`` (``features``, ``dequantized``, ``noise``,
        ``spread``, ``fit_samples``, ``chosen``, ``clear``) and ``timings``.

    Raises
    ------
    GmmsegError
        No valid pixel, or not even ``k_min`` distinct valid pixels.  A K
        larger than the number of distinct pixels is recorded as an error
        in its row and not chosen.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((30, 30), np.float32); img[10:] = 1; img[20:] = 2
    >>> img += np.random.default_rng(0).normal(0, 0.05, img.shape).astype(np.float32)
    >>> result = select_k(img, 1, 5)
    >>> result.n_components, result.info["decided_by"], result.count.clear
    (3, 'count', True)
    """
    k_min, k_max = check_n_components(k_min, "k_min"), check_n_components(k_max, "k_max")
    if k_max < k_min:
        raise ValueError(f"k_max must be >= k_min, got k_min={k_min}, k_max={k_max}")
    criterion = check_criterion(criterion)
    timings = {}
    t0 = time.perf_counter()
    img, where, valid, n_valid = read_valid(image, mask, timings, channel_axis=channel_axis,
                                            spacing=spacing)
    t = time.perf_counter()
    extractor = FeatureExtractor(features, standardize=standardize, pca=pca)
    X = extractor.fit_transform(img, valid=valid, random_state=random_state)
    timings["features"] = time.perf_counter() - t
    t = time.perf_counter()
    params = dict(random_state=random_state, init_params=init_params, n_init=n_init,
                  max_iter=max_iter, tol=tol, reg_covar=reg_covar, n_jobs=n_jobs)
    result = choose_k(img, valid, where, X, extractor.items_, range(int(k_min), int(k_max) + 1),
                      criterion, params, max_fit_samples, standardize=standardize, pca=pca,
                      covariance_types=covariance_types)
    timings["select"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    result.features = extractor
    result.info.update(n_valid=n_valid, timings=timings)
    logger.info("%schose K=%d (%s) by %s among K=%d..%d in %.2f s", where,
                result.n_components, result.covariance_type, result.info["decided_by"], k_min,
                k_max, timings["total"])
    return result


def plot_selection(result, path=None, *, overwrite=False):
    """What K was chosen and why: the density criteria and the count against K.

    The upper panel shows BIC and AIC of the model's features (how well
    each mixture fits the density; on photos they keep falling), the lower
    one the count's ICL, BIC plus twice the classification entropy, on the
    pixels' appearance (how well the components stand apart as clusters),
    with its mean entropy per pixel at ICL's choice.  Each curve's minimum
    is ringed; the chosen K is starred on the curve that decided it and
    marked by a dotted line in both panels.  A result of
    :func:`gmmseg.mixture.select_k` (no count) shows its own ICL below.

    Needs matplotlib (the ``plot`` extra), imported only here; the figure
    is drawn on an Agg canvas, so no display and no global backend change
    is involved.

    Parameters
    ----------
    result : SelectKResult
    path : str or Path, optional
        Image file to write; its suffix chooses the format (``.png``,
        ``.pdf``, ``.svg``, ...).  Written atomically; an existing file is
        kept unless ``overwrite``.
    overwrite : bool, default=False

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(f"plotting needs matplotlib; {_PLOT_HINT}") from err
    fig = Figure(figsize=(6.4, 6.0), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    decided_by = result.info.get("decided_by", result.criterion)
    count = result.count if result.count is not None else result
    _plot_criteria(axes[0], result, ("bic", "aic"), result.n_components,
                   star=decided_by in ("bic", "aic") and decided_by)
    axes[0].set_title("density of the model's features", fontsize="small", loc="left")
    _plot_criteria(axes[1], count, ("icl",), result.n_components,
                   star=decided_by in ("count", "icl", "auto") and "icl")
    axes[1].set_title(_count_title(count, result.info.get("count", {})), fontsize="small",
                      loc="left")
    axes[-1].set_xlabel("K (number of components)")
    axes[-1].set_xticks(sorted({r["n_components"] for r in result.rows}))
    fig.suptitle(_plot_title(result, count, decided_by), fontsize="medium")
    if path is not None:
        path = Path(path)
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in canvas.get_supported_filetypes():
            raise ValueError(f"{path}: unsupported plot format {path.suffix!r}; use one of "
                             f"{', '.join(sorted(canvas.get_supported_filetypes()))}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120)
    return fig


def _plot_criteria(ax, result, names, chosen_k, star):
    """Curves of ``names`` per covariance type: minima ringed, the choice starred on ``star``."""
    ctypes = list(dict.fromkeys(r["covariance_type"] for r in result.rows))
    for j, name in enumerate(names):
        for i, ctype in enumerate(ctypes):
            curve = result.curve(ctype)
            points = [(k, v) for k, v in zip(curve["k_values"], curve[name]) if v is not None]
            ax.plot(*zip(*points), marker="o", markersize=4, color=f"C{i + j * len(ctypes)}",
                    linestyle="-" if j == 0 else "--",
                    label=name.upper() + (f" ({ctype})" if len(ctypes) > 1 else ""))
        ax.plot(*_point(result, *result.best_by(name), name), marker="o", markersize=11,
                markerfacecolor="none", markeredgecolor="0.3", linestyle="none")
    if star:
        ctype = result.covariance_type if result.count is None or len(ctypes) == 1 else ctypes[0]
        ax.plot(*_point(result, chosen_k, ctype, star), marker="*", markersize=15,
                color="crimson", linestyle="none", label=f"chosen: K = {chosen_k}")
    ax.axvline(chosen_k, color="crimson", linewidth=0.8, linestyle=":")
    ax.set_ylabel("lower is better", fontsize="small")
    ax.legend(fontsize="small")
    ax.margins(x=0.06, y=0.1)
    ax.grid(alpha=0.3)


def _point(result, k, ctype, name):
    """``([k], [value])`` of criterion ``name`` in the row of ``(ctype, k)``."""
    row = next(r for r in result.rows if r["n_components"] == k and r["covariance_type"] == ctype)
    return [k], [row[name]]


def _count_title(count, details):
    k = count.best_by("icl")[0]
    row = next(r for r in count.rows if r["n_components"] == k)
    on = details.get("features")
    return (f"count: ICL{f' on {on}' if on else ''}"
            + (", de-quantised" if details.get("dequantized") else "")
            + f"; mean entropy at K = {k}: {row['entropy'] / count.n_samples:.3f} nats "
              f"({'clear' if count.clear else 'not clear'}; clear at <= {CLEAR_ENTROPY:g})")


def _plot_title(result, count, decided_by):
    k_bic = result.best_by("bic")[0]
    if decided_by == "count":
        why = f"K = {result.n_components}: the count of clear clusters (BIC alone: K = {k_bic})"
    elif decided_by in ("icl", "auto"):
        why = f"K = {result.n_components} by {decided_by.upper()}"
    else:
        why = f"K = {result.n_components} by {decided_by.upper()}"
        if result.criterion == "auto":
            why += f": no clear count (ICL: K = {count.best_by('icl')[0]})"
    return (f"{why}\ndensity on {result.n_samples:,.0f} fit samples, count on "
            f"{count.n_samples:,.0f}")
