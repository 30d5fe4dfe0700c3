"""How many segments: the image-level K sweep and its plot.

:func:`select_k` builds the features and the fit sample exactly as
:func:`~gmmseg.pipeline.segment` does and hands them to
:func:`gmmseg.mixture.select_k`; :func:`plot_selection` draws the criterion
curve.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..features import FeatureExtractor
from ..io import atomic_output
from ..mixture import check_n_components
from .segment import DEFAULT_MAX_FIT_SAMPLES, read_valid, select_on_fit_sample

logger = logging.getLogger(__name__)

_PLOT_HINT = "install it with: pip install 'gmmseg[plot]'"


def select_k(
    image,
    k_min=1,
    k_max=10,
    *,
    criterion="bic",
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
    """How many segments: fit a mixture for each K in ``k_min..k_max``, pick by BIC or AIC.

    Features are built once and the mixtures are fitted on one random
    subsample of the valid pixels -- the very features and subsample
    :func:`segment` uses with the same arguments, so ``segment(image,
    n_components="auto")`` makes the same choice.  BIC and AIC are computed
    on that fit sample (``n`` = its size), lower is better.  Work is shared
    between K; see :func:`gmmseg.mixture.select_k`.

    Parameters
    ----------
    image : Image, ndarray or path
        As for :func:`segment`.
    k_min, k_max : int, default 1 and 10
        The K tried: ``k_min..k_max`` inclusive.
    criterion : {"bic", "aic"}, default="bic"
    covariance_types : str or sequence of str, default=("full",)
        Also choose among these covariance types (each is fitted for every K).
    features, standardize, pca, mask, random_state, max_fit_samples, channel_axis, spacing :
        As for :func:`segment`.
    init_params, n_init, max_iter, tol, reg_covar, n_jobs :
        Passed to :class:`~gmmseg.mixture.GaussianMixture`.

    Returns
    -------
    SelectKResult
        ``rows`` (one per K: log-likelihood, BIC, AIC, iterations, seconds),
        the chosen ``n_components`` and ``covariance_type``, the fitted
        ``model`` (components in canonical order), ``features`` (the fitted
        :class:`~gmmseg.features.FeatureExtractor`) and ``info`` (``n_valid``,
        ``fit_samples``, ``timings``).

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
    >>> select_k(img, 1, 5).n_components
    3
    """
    k_min, k_max = check_n_components(k_min, "k_min"), check_n_components(k_max, "k_max")
    if k_max < k_min:
        raise ValueError(f"k_max must be >= k_min, got k_min={k_min}, k_max={k_max}")
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
    result = select_on_fit_sample(X, range(int(k_min), int(k_max) + 1), where, criterion,
                                  params, max_fit_samples, covariance_types=covariance_types)
    timings["select"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    result.features = extractor
    result.info.update(n_valid=n_valid, timings=timings)
    logger.info("%schose K=%d (%s) by %s among K=%d..%d in %.2f s", where,
                result.n_components, result.covariance_type, criterion.upper(), k_min, k_max,
                timings["total"])
    return result


def plot_selection(result, path=None, *, overwrite=False):
    """BIC and AIC against K, the chosen K marked; saved to ``path`` if given.

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
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    ctypes = list(dict.fromkeys(r["covariance_type"] for r in result.rows))
    chosen = result.best_row
    for ax, name in zip(axes, ("bic", "aic")):
        for i, ctype in enumerate(ctypes):
            curve = result.curve(ctype)
            points = [(k, v) for k, v in zip(curve["k_values"], curve[name]) if v is not None]
            ax.plot(*zip(*points), marker="o", markersize=4, color=f"C{i}",
                    label=ctype if len(ctypes) > 1 else None)
        ax.axvline(chosen["n_components"], color="crimson", linewidth=0.8, linestyle=":")
        if name == result.criterion:
            ax.plot([chosen["n_components"]], [chosen[name]], marker="*", markersize=15,
                    color="crimson", linestyle="none",
                    label=f"chosen: K = {chosen['n_components']}"
                          + (f" ({chosen['covariance_type']})" if len(ctypes) > 1 else ""))
            ax.legend()
        ax.set_ylabel(name.upper())
        ax.margins(x=0.06, y=0.1)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("K (number of components)")
    axes[-1].set_xticks(sorted({r["n_components"] for r in result.rows}))
    fig.suptitle(f"Model selection by {result.criterion.upper()}: K = {result.n_components} "
                 f"(criteria on {result.n_samples:,.0f} fit samples; lower is better)",
                 fontsize="medium")
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
