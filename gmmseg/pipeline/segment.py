"""``segment``: image in, :class:`~gmmseg.pipeline.result.Segmentation` out.

Owns the steps between an image and its labels -- valid pixels, features,
the fit (one K, K chosen by a criterion, or a start for the Potts prior),
labelling -- and the defaults of those steps.  Writes no file and parses no
command-line option.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import time
import warnings
from collections.abc import Iterable

import numpy as np

from .. import mrf, postprocess
from ..errors import (
    GmmsegError,
    LargeModelWarning,
    TooFewDistinctRowsError,
    counted,
    one_line,
)
from ..features import FeatureExtractor
from ..io import MAX_LABELS, as_image, resolve_mask
from ..mixture import (
    GaussianMixture,
    check_k_values,
    check_n_components,
    estimate_fit_cost,
    n_free_parameters,
)
from ..mixture import select_k as select_k_arrays
from .appearance import appearance_features, sample_rows
from .presets import with_presets
from .result import Segmentation

logger = logging.getLogger(__name__)

#: Default number of valid pixels the mixture is fitted on; every pixel is
#: still labelled.  The README's Speed section gives its cost in quality
#: (log-likelihood over all pixels, ARI against a fit on all of them).
DEFAULT_MAX_FIT_SAMPLES = 150_000
#: Candidate K of ``n_components="auto"``.
DEFAULT_K_RANGE = (1, 10)
#: How ``n_components="auto"`` chooses K: the count of the appearance's
#: clusters by ICL where they are clear, else BIC (see select_k).
DEFAULT_CRITERION = "auto"
# Short EM runs screened per K for the count (the model's sweep screens
# init_trials=10): on its 5,000 pixels 3 count the 90 synthetic images of
# scripts/check_select_k.py as well as 10 do, for 0.4 of the time.
_COUNT_TRIALS = 3
#: Fewest fit pixels per free parameter of the mixture before ``n_components``
#: counts as far beyond what the pixels support.  Below one, the average
#: component has fewer pixels than parameters (a full covariance in D
#: dimensions alone needs D + 1 pixels to be non-singular): what EM fits is
#: the noise of a few pixels.  Rules of thumb for a good fit ask for ten per
#: parameter; segmentations of clean images do well with far fewer, so only
#: the hopeless case is called out.
MIN_PIXELS_PER_PARAMETER = 1
#: A fit of more than ``DEFAULT_K_RANGE``'s largest K estimated to take longer
#: than this many seconds is announced before it starts, so that a large K
#: never runs for minutes without a word.
ANNOUNCE_FIT_SECONDS = 30.0


@with_presets
def segment(image, n_components=4, *, features="auto", covariance_type="full", random_state=0,
            max_fit_samples=DEFAULT_MAX_FIT_SAMPLES, mask=None, model=None,
            feature_extractor=None, standardize=True, pca=None, min_region_size=0,
            smoothing=0.0, connectivity=None, init_params="k-means++", n_init=1, max_iter=100,
            tol=1e-3, reg_covar=1e-6, n_jobs=None, criterion=DEFAULT_CRITERION, channel_axis=-1,
            spacing=None, preset=None):
    """Segment an image with a Gaussian mixture over per-pixel features.

    Parameters
    ----------
    image : Image, ndarray or path
        An :class:`~gmmseg.io.Image`, a file path, or an array read as
        :func:`gmmseg.io.as_image` reads it with ``channel_axis`` (None: a
        ``(Z, H, W)`` volume) and ``spacing``.  Never modified.
    n_components : int, "auto" or sequence of int, default=4
        Number of segments K.  "auto" chooses K in 1..10 by ``criterion`` (as
        :func:`select_k` does), a sequence of ints among those; the choice
        and the curves go into ``info["model_selection"]`` and the report.
        Ignored when ``model`` is given.
    features : str, callable or list, default="auto"
        Feature spec (``"lab,position:0.5"``), callables ``f(image) -> (..., d)``,
        or a list of both; "auto": ``lab,position`` for RGB photos, ``gray``
        for grey images and ``bands`` otherwise.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    random_state : int or None, default=0
        Seeds the subsample and the initialisation: same seed, same labels.
    max_fit_samples : int or None, default=150000
        Fit on at most this many random valid pixels (None: all); every pixel
        is labelled.
    mask : bool ndarray of the image's spatial shape, path or "nonzero", optional
        Pixels to segment, combined with the image's validity mask: an array,
        a file on the image's grid (non-zero = in), or "nonzero"; see
        :func:`gmmseg.io.resolve_mask`.
    model : GaussianMixture, optional
        A fitted mixture to apply instead of fitting one.  Its features come
        from ``feature_extractor`` or, if that is None, from the model's
        ``metadata_["features"]`` (as stored by a saved gmmseg model).
    feature_extractor : FeatureExtractor, optional
        A fitted extractor to reuse (with ``model``).
    min_region_size : int, default=0
        Merge connected regions of fewer pixels into their neighbour.
    smoothing : float, default=0
        Strength ``beta`` of a Potts prior on the label field, inferred by mean
        field inside EM (:mod:`gmmseg.mrf`): neighbours tend to share a segment,
        which removes speckle.  0: the plain mixture; about 1 suits noisy
        images.  With ``model`` given, only the labels are smoothed.
    connectivity : int, optional
        Neighbourhood of the prior: 4 or 8 (default) in 2-D, 6 or 26
        (default) in 3-D, weighted by the physical pixel spacing.
    standardize, pca, init_params, n_init, max_iter, tol, reg_covar, n_jobs :
        Passed to :class:`~gmmseg.features.FeatureExtractor` and
        :class:`~gmmseg.mixture.GaussianMixture`.
    criterion : {"auto", "icl", "bic", "aic"}, default="auto"
        How ``n_components="auto"`` chooses K (see :func:`select_k`).
    preset : str, optional
        A named recipe (:data:`gmmseg.presets.PRESETS`: ``photo``,
        ``fluorescence``, ``t1``; "auto": as the file says, see
        :func:`gmmseg.presets.auto_preset`): its values for every argument
        not passed explicitly; ``info["preset"]`` records them.

    Returns
    -------
    Segmentation

    Raises
    ------
    GmmsegError
        The image has no valid pixel, or fewer distinct valid pixels than K.

    Examples
    --------
    >>> img = np.zeros((20, 20, 3), np.uint8); img[:, 10:] = 200
    >>> seg = segment(img, 2, random_state=0)
    >>> seg.labels[[0, 0], [0, 19]].tolist()
    [0, 1]
    """
    del preset  # applied by with_presets
    k_values = None if model is not None else candidate_ks(n_components)
    timings = {}
    t0 = time.perf_counter()
    img, where, valid, n_valid = read_valid(image, mask, timings, channel_axis=channel_axis,
                                            spacing=spacing)
    pretrained = model is not None
    with _stopwatch(timings, "features"):
        X, feature_extractor, lab_map = _features(img, valid, model, feature_extractor, features,
                                                  standardize, pca, random_state,
                                                  max_fit_samples)
    fit_samples = selection = None
    with _stopwatch(timings, "fit"):
        if not pretrained:
            params = dict(covariance_type=covariance_type, random_state=random_state,
                          init_params=init_params, n_init=n_init, max_iter=max_iter, tol=tol,
                          reg_covar=reg_covar, n_jobs=n_jobs)
            selection = None if k_values is None else choose_k(
                img, valid, where, X, feature_extractor.items_, k_values, criterion, params,
                max_fit_samples, standardize=standardize, pca=pca)
            model, fit_samples = fit_for_segment(
                X, valid, img.spacing, n_components, selection, smoothing, where, params,
                max_fit_samples)
    q = energies = None
    if smoothing:
        with _stopwatch(timings, "smoothing"):
            q, energies = mrf.hmrf_em(model, X, valid, float(smoothing),
                                      connectivity=connectivity, spacing=img.spacing, tol=tol,
                                      update_model=not pretrained)
            if not pretrained:
                q = q[model.sort_components()]
    with _stopwatch(timings, "predict"):
        labels, proba, log_lik, mean_ll = _label(model, X, valid, q, min_region_size)
        del X, q
    timings["total"] = time.perf_counter() - t0
    info = _info(n_valid, mean_ll, fit_samples, random_state, pretrained, min_region_size,
                 smoothing, energies, selection, timings)
    if not pretrained:
        _record_features(model, feature_extractor)
    logger.info("%ssegmented %d valid pixels into %d segments in %.2f s",
                where, n_valid, model.n_components, timings["total"])
    seg = Segmentation(labels, proba, log_lik, model, feature_extractor, img, info)
    seg._region_map = lab_map
    return seg


def _features(img, valid, model, feature_extractor, features, standardize, pca, random_state,
              max_fit_samples):
    """The valid pixels' feature rows, their extractor, and the Lab map of a photo's ``lab``.

    The extractor is a model's own, or fitted here: its standardisation (and
    PCA) on the fit sample's rows, so that the windowed path, which sees the
    image window by window, fits the same.  The Lab map (None unless the
    image is RGB and ``lab`` is a feature) is what the image's connected
    regions compare, kept so that they do not convert the photo again.
    """
    maps = {"lab": None} if img.is_rgb else {}
    if model is not None:
        if feature_extractor is None:
            feature_extractor = stored_feature_extractor(model)
        X = feature_extractor.transform(img, valid=valid, maps=maps)
    else:
        feature_extractor = FeatureExtractor(features, standardize=standardize, pca=pca)
        X = feature_extractor.fit_transform(img, valid=valid, sample=max_fit_samples,
                                            random_state=random_state, maps=maps)
    return X, feature_extractor, maps.get("lab")


def _info(n_valid, mean_ll, fit_samples, random_state, pretrained, min_region_size, smoothing,
          energies, selection, timings):
    """``Segmentation.info`` of a :func:`segment` call."""
    return {
        "n_valid": n_valid, "mean_log_likelihood": mean_ll, "fit_samples": fit_samples,
        "random_state": random_state if isinstance(random_state, (int, type(None))) else None,
        "pretrained": pretrained, "min_region_size": int(min_region_size or 0),
        "smoothing": float(smoothing or 0.0), "smoothing_energies": energies,
        # hmrf_em records the start, each EM iteration and a final sweep.
        "smoothing_iterations": len(energies) - 2 if smoothing else 0,
        "model_selection": None if selection is None else selection_summary(selection),
        "timings": timings,
    }


@contextlib.contextmanager
def _stopwatch(timings, name):
    """Add the seconds the block takes to ``timings[name]``."""
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - t


def fit_for_segment(X, valid, spacing, n_components, selection, smoothing, where, params,
                    max_fit_samples):
    """The mixture :func:`segment` labels with: ``(model, fit_samples)``.

    The chosen K's model of a ``selection`` (when K was chosen), else a fit of
    ``n_components``; with ``smoothing``, fitted on locally averaged features
    (``valid``: the pixels' mask) and re-estimated on ``X`` once, the start of
    the Potts prior.  The windowed path starts its models here too.
    """
    if selection is not None:
        n_components = selection.n_components
        if not smoothing:
            # The chosen fit is the model; its warnings are this call's.
            selection.reemit_warnings()
            return selection.model, selection.info["fit_samples"]
    if smoothing:
        # Start EM with the prior from a mixture of locally averaged
        # features, re-estimated on the real ones (see mrf.local_mean).
        X_start = mrf.local_mean(X, valid, spacing=spacing)
        model, fit_samples = fit_mixture(X_start, n_components, where, params, max_fit_samples)
        start = model.e_step(X_start, labels=False, log_likelihood=False).proba
        del X_start
        model.m_step(X, start.T)
        return model, fit_samples
    return fit_mixture(X, n_components, where, params, max_fit_samples)


def _label(model, X, valid, q, min_region_size):
    """Labels, and the probability and log-likelihood maps when they are at hand.

    Returns ``(labels, proba, log_likelihood, mean_log_likelihood)``; the
    maps have the image's spatial shape (``proba`` a trailing K axis).
    Without the prior's ``q``, ``proba`` and ``log_likelihood`` are None:
    :class:`Segmentation` works them out when they are first asked for, so
    that a segmentation that never reads them never holds them (``4 (K +
    1)`` bytes a pixel).
    """
    if q is None:
        result = model.e_step(X, labels=True, proba=False, log_likelihood=True)
        mean_ll = float(result.log_likelihood.mean(dtype=np.float64))
        labels = postprocess.scatter_valid(result.labels, valid, -1)
        proba = log_lik = None
    else:
        result = model.e_step(X, labels=False, proba=False, log_likelihood=True)
        mean_ll = float(result.log_likelihood.mean(dtype=np.float64))
        labels = np.where(valid, q.argmax(axis=0).astype(np.int32), -1)
        proba = np.ascontiguousarray(np.moveaxis(q, 0, -1), dtype=np.float32)
        log_lik = postprocess.scatter_valid(
            result.log_likelihood.astype(np.float32, copy=False), valid, np.nan)
    del result
    if min_region_size and min_region_size > 1:
        labels = postprocess.remove_small_regions(labels, int(min_region_size))
    return labels, proba, log_lik, mean_ll


def _record_features(model, feature_extractor):
    """Store the extractor in the model so that a saved model can be applied to other images."""
    if getattr(model, "metadata_", {}).get("features"):
        return
    try:
        model.metadata_ = {**getattr(model, "metadata_", {}),
                           "features": feature_extractor.to_dict()}
    except ValueError:
        pass  # the features include a Python callable, which cannot be saved


def combined_mask(img, mask):
    """The image's valid pixels, within ``mask`` (array, file or rule: :func:`resolve_mask`)."""
    mask = resolve_mask(mask, img)
    return img.valid if mask is None else img.valid & mask


def where_of(img):
    return f"{img.path}: " if img.path else ""


def read_valid(image, mask, timings, **array_options):
    """The image, its ``"path: "`` prefix for messages, its valid pixels and their count.

    Refuses an image with no valid pixel; ``timings["read"]`` gets the read's seconds.
    ``array_options`` (``channel_axis``, ``spacing``) go to :func:`gmmseg.io.as_image`.
    """
    t = time.perf_counter()
    img = as_image(image, **array_options)
    timings["read"] = time.perf_counter() - t
    where = where_of(img)
    valid = combined_mask(img, mask)
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        raise GmmsegError(f"{where}no valid pixels to segment (all masked, NaN or nodata)")
    return img, where, valid, n_valid


def candidate_ks(n_components):
    """None for a fixed K, else the sorted candidate K to choose from.

    The one reading of ``segment``'s ``n_components``: an integer K
    (:func:`check_segment_count`), ``"auto"`` (K in :data:`DEFAULT_K_RANGE`)
    or a sequence of candidate K (:func:`gmmseg.mixture.check_k_values`,
    each a count a label map holds).

    Examples
    --------
    >>> candidate_ks(3) is None, candidate_ks("auto")[-1], candidate_ks([4, 2, 4])
    (True, 10, [2, 4])
    """
    if isinstance(n_components, numbers.Integral):
        check_segment_count(n_components)
        return None
    if isinstance(n_components, str) and n_components == "auto":
        return list(range(DEFAULT_K_RANGE[0], DEFAULT_K_RANGE[1] + 1))
    if isinstance(n_components, str) or not isinstance(n_components, Iterable):
        raise ValueError(
            f"n_components must be an integer >= 1, 'auto' or a sequence of integers, "
            f"got {n_components!r}")
    ks = check_k_values(n_components, name="candidate n_components")
    check_segment_count(ks[-1], name="candidate n_components")
    return ks


def check_segment_count(value, name="n_components"):
    """A number of segments: an integer K >= 1 that a label map can hold.

    :func:`gmmseg.mixture.check_n_components`, and at most
    :data:`gmmseg.io.MAX_LABELS` (65535): label files are uint8 up to 255
    segments and uint16 beyond, so a larger K could be fitted but never
    written.

    Examples
    --------
    >>> check_segment_count(300)
    300
    >>> check_segment_count(70000)
    Traceback (most recent call last):
    ...
    ValueError: n_components must be at most 65535 (label maps are uint16), got 70000
    """
    k = check_n_components(value, name)
    if k > MAX_LABELS:
        raise ValueError(f"{name} must be at most {MAX_LABELS} (label maps are uint16), got {k}")
    return k


def stored_feature_extractor(model):
    """The fitted :class:`FeatureExtractor` recorded in ``model.metadata_``.

    :func:`segment` records it on every model it fits (unless the features
    include a Python callable, which cannot be saved), and
    :meth:`GaussianMixture.save` keeps it, so a saved model can be applied to
    new images with the same features.
    """
    spec = getattr(model, "metadata_", {}).get("features")
    if spec is None:
        raise ValueError("model has no stored feature extractor; pass feature_extractor=")
    return FeatureExtractor.from_dict(spec)


def fit_sample(X, max_fit_samples, random_state):
    """The rows of ``X`` a mixture is fitted on: all, or ``max_fit_samples`` random ones.

    Parameters
    ----------
    X : (N, D) ndarray
    max_fit_samples : int or None
    random_state : int or None

    Returns
    -------
    (n, D) ndarray
        ``X`` itself when ``N <= max_fit_samples``; otherwise the rows of a
        random subset, in their original order.  The same seed gives the
        same rows, so :func:`segment` and :func:`select_k` fit on the same
        pixels.
    """
    rows = sample_rows(len(X), max_fit_samples, random_state)
    return X if rows is None else X[rows]


def too_few_pixels(where, n_components, what="distinct valid pixels"):
    """The error for data with fewer distinct rows than components, in the API's words."""
    return GmmsegError(f"{where}fewer {what} than n_components={n_components}; "
                       "use a smaller n_components")


def fit_mixture(X, n_components, where, params, max_fit_samples,
                what="distinct valid pixels"):
    """Fit a mixture on (a random subsample of) ``X``, components in canonical order.

    ``params`` are :class:`GaussianMixture` keyword arguments; ``what`` names
    the rows in the error for too few distinct ones.  Returns ``(model, rows
    fitted on)``; errors become :class:`GmmsegError` s that start with
    ``where``.
    """
    X_fit = fit_sample(X, max_fit_samples, params["random_state"])
    model = GaussianMixture(check_segment_count(n_components), **params)
    announce_fit_cost(model, X_fit, len(X), where)
    try:
        model.fit(X_fit)
    except TooFewDistinctRowsError as err:
        raise too_few_pixels(where, n_components, what) from err
    except ValueError as err:
        raise GmmsegError(f"{where}{err}") from err
    model.sort_components()
    return model, len(X_fit)


def announce_fit_cost(model, X_fit, n_label, where=""):
    """Warn before ``model.fit(X_fit)`` when K is beyond what the pixels support or slow.

    A :class:`~gmmseg.errors.LargeModelWarning` when the mixture has fewer
    than :data:`MIN_PIXELS_PER_PARAMETER` fit pixels per free parameter, or
    when K is beyond the range ``"auto"`` tries and the fit is estimated
    (:func:`gmmseg.mixture.estimate_fit_cost`, measured on this machine) to
    take over :data:`ANNOUNCE_FIT_SECONDS`.  The message gives both counts
    and the estimate, so that the wait is known before it starts.
    """
    (n, d), k = X_fit.shape, model.n_components
    n_params = n_free_parameters(k, d, model.covariance_type)
    per_parameter = n / n_params
    thin = per_parameter < MIN_PIXELS_PER_PARAMETER
    if not thin and k <= DEFAULT_K_RANGE[1]:
        return
    cost = estimate_fit_cost(model, X_fit, n_label)
    if not thin and cost.total < ANNOUNCE_FIT_SECONDS:
        return
    each = f"{per_parameter:.0f}" if per_parameter >= 10 else f"{per_parameter:.2g}"
    starts = f", n_init={model.n_init}" if model.n_init > 1 else ""
    warnings.warn(
        f"{where}n_components={k} means {counted(n_params, 'free parameter', grouped=True)} "
        f"for {counted(n, 'fit pixel', grouped=True)}, {each} pixels each"
        + (": fewer pixels than parameters, components fit noise" if thin else "")
        + f"; the fit takes up to about {_duration(cost.total)} here "
        f"({_duration(cost.iteration)} per EM iteration, max_iter={model.max_iter}{starts}); "
        "choose K with gmmseg.pipeline.select_k or use a smaller n_components",
        LargeModelWarning, stacklevel=2)


def _duration(seconds):
    """Seconds for a person: ``'0.4 s'``, ``'12 s'``, ``'3 min 10 s'``, ``'2 h 5 min'``.

    Examples
    --------
    >>> _duration(0.42), _duration(12.3), _duration(190), _duration(7500)
    ('0.4 s', '12 s', '3 min 10 s', '2 h 5 min')
    >>> _duration(0.004)
    'under 0.1 s'
    """
    if seconds < 0.1:
        return "under 0.1 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def select_on_fit_sample(X, k_values, where, criterion, params, max_fit_samples,
                         covariance_types=None):
    """:func:`gmmseg.mixture.select_k` on the fit sample of ``X``; models in canonical order."""
    params = dict(params)
    ctype = params.pop("covariance_type", "full")
    X_fit = fit_sample(X, max_fit_samples, params["random_state"])
    try:
        result = select_k_arrays(X_fit, k_values, criterion=criterion,
                                 covariance_types=covariance_types or (ctype,), **params)
    except TooFewDistinctRowsError as err:
        raise too_few_pixels(where, min(k_values)) from err
    except ValueError as err:
        raise GmmsegError(f"{where}{err}") from err
    for model in result.models.values():
        model.sort_components()
    result.info["fit_samples"] = len(X_fit)
    return result


def choose_k(img, valid, where, X, items, k_values, criterion, params, max_fit_samples, *,
             standardize=True, pca=None, covariance_types=None):
    """How many segments: the density of the model's features and the count of the appearance.

    Two sweeps over ``k_values``, each by :func:`gmmseg.mixture.select_k`:

    * the density sweep fits the model's own features ``X`` on the fit
      sample (BIC, AIC; its models are the ones :func:`segment` labels with);
    * the count fits the appearance of ``items`` (the model's features,
      resolved), de-quantised, on :data:`~gmmseg.pipeline.appearance.COUNT_SAMPLES`
      pixels of the fit sample (:func:`~gmmseg.pipeline.appearance.appearance_features`),
      and ICL counts its clusters.

    ``criterion``: "bic" or "aic" choose on the density sweep, "icl" takes
    the count, "auto" the count where its clusters are clear
    (:attr:`~gmmseg.mixture.SelectKResult.clear`), else BIC's K.  Returns the
    density sweep's :class:`~gmmseg.mixture.SelectKResult` with that choice
    (its covariance type: the lowest BIC at the chosen K), ``count`` the
    count's result, ``info["decided_by"]`` ("count", "bic" or "aic") and
    ``info["count"]`` the details of the appearance features.  A count that
    cannot be made (no K fits its pixels) leaves the choice to the density,
    ``count`` None and the reason in ``info["count"]["error"]``.
    """
    density = "bic" if criterion in ("auto", "icl") else criterion
    result = select_on_fit_sample(X, k_values, where, density, params, max_fit_samples,
                                  covariance_types)
    try:
        count, details = _count(img, valid, items, k_values, params, max_fit_samples,
                                covariance=result.covariance_type, standardize=standardize,
                                pca=pca)
    except ValueError as err:
        count, details = None, {"error": one_line(err)}
    result.criterion, result.count, decided_by = criterion, count, density
    if count is not None and (criterion == "icl" or criterion == "auto" and count.clear):
        k = count.best_by("icl")[0]
        rows = [r for r in result.rows if r["n_components"] == k and r["error"] is None]
        if rows:
            best = min(rows, key=lambda r: r["bic"])
            result.n_components, result.covariance_type = k, best["covariance_type"]
            result.model = result.models[(best["covariance_type"], k)]
            decided_by = "count"
    result.info.update(decided_by=decided_by, count=details)
    return result


def _count(img, valid, items, k_values, params, max_fit_samples, *, covariance, standardize,
           pca):
    """The count's :class:`~gmmseg.mixture.SelectKResult` (by ICL) and its feature details."""
    params = {key: value for key, value in params.items() if key != "covariance_type"}
    params["init_trials"] = _COUNT_TRIALS
    extractor, X, details = appearance_features(
        img, valid, items, max_fit_samples=max_fit_samples, random_state=params["random_state"],
        standardize=standardize, pca=pca)
    count = select_k_arrays(X, k_values, criterion="icl", covariance_types=(covariance,),
                            **params)
    count.features = extractor
    details.update(fit_samples=len(X), chosen=count.n_components, clear=count.clear)
    return count, details


def selection_summary(result):
    """``result.summary()`` with the count beside it (for reports), JSON-ready."""
    out = result.summary()
    if "decided_by" in result.info:
        out["decided_by"] = result.info["decided_by"]
        out["count"] = {key: value for key, value in result.info["count"].items()
                        if key != "noise"}
    if result.count is not None:
        curve = result.count.curve()
        out["count"].update({name: curve[name] for name in ("k_values", "icl", "entropy", "bic")})
    return out
