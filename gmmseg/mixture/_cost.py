"""What a fit will cost, said before it starts: free parameters and measured seconds.

This module owns the two numbers a caller needs to warn, before a fit, that
K is beyond what the data support or that the fit will take a while:
:func:`n_free_parameters` (the count the BIC charges for) and
:func:`estimate_fit_cost`, which times the work a fit repeats -- one real
EM iteration of the K-component mixture, one nearest-centre pass of the
k-means++ seeding -- on a sample of the rows, and scales them by the number
of times the estimator's settings repeat them.  The per-row costs are this
machine's, for this K, D, covariance type and thread count, not constants.
Nothing it fits is kept.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import NamedTuple

import numpy as np

from ._gaussian_mixture import GaussianMixture
from ._init import _TRIAL_ITER, _TRIAL_ROWS, _nearest
from ._parameters import _covariance_shape, _n_parameters
from ._validation import check_covariance_type, check_n_components

# The probe's size in rows x components: about a million elements, where the
# arithmetic outweighs the fixed cost of a pass (thread start-up, the M-step's
# K x D^3 work), so that its time per row extrapolates to the whole sample.
_PROBE_ELEMENTS = 2**20
_PROBE_MIN_ROWS = 4096
# Each probe runs this many times and the fastest counts: on a shared machine
# the others measure the neighbours too.
_REPEATS = 2


def n_free_parameters(n_components, n_features, covariance_type="full"):
    """Free parameters of a mixture: weights, means and covariances, as the BIC counts them.

    Examples
    --------
    >>> n_free_parameters(3, 2), n_free_parameters(3, 2, "spherical")
    (17, 11)
    """
    return _n_parameters(check_covariance_type(covariance_type),
                         check_n_components(n_components), int(n_features))


class FitCost(NamedTuple):
    """Seconds a fit will take at most, from measured per-row costs.

    Attributes
    ----------
    iteration : float
        One EM iteration over all the fit rows.
    start : float
        The initialisation of every start (``n_init``): k-means++ seeding
        and the short EM runs of the start-up trials.
    total : float
        ``start`` plus ``max_iter`` iterations per start, plus one pass
        labelling the rows to label: the fit if EM runs to ``max_iter``.
    """

    iteration: float
    start: float
    total: float


def estimate_fit_cost(model, X, n_label=None):
    """How long ``model.fit(X)`` will take at most, measured on a sample of ``X``.

    Times one EM iteration of ``model``'s K, covariance type and ``n_jobs``
    (the streamed E-step with its statistics, then the M-step) on about
    ``2**20 / K`` rows (at least 4096, at most all), started from K of the
    rows with unit covariances, and one nearest-centre pass (the step
    k-means++ repeats ``K * (2 + log K)`` times); both grow with the rows.
    The estimator's settings say how often each is repeated: ``n_init``
    starts of ``init_trials`` seedings and short EM runs (on at most 20000
    rows) and ``max_iter`` iterations.

    Parameters
    ----------
    model : GaussianMixture
        The unfitted estimator, with the settings of the fit to come.
    X : (N, D) ndarray
        The rows it will be fitted on (standardised features: unit
        covariances are the scale of the probe's start).
    n_label : int, optional
        Rows labelled after the fit (one E-step pass), e.g. all pixels of
        an image fitted on a sample; default ``N``.

    Returns
    -------
    FitCost
        An upper estimate: EM often converges before ``max_iter``.
    """
    k = check_n_components(model.n_components)
    ctype = check_covariance_type(model.covariance_type)
    X = np.asarray(X)
    n = len(X)
    rows = min(n, max(_PROBE_MIN_ROWS, math.ceil(_PROBE_ELEMENTS / k), k))
    # Evenly spaced rows: the caller's sample is random already, and this
    # takes no random state from anyone.
    probe = X[np.linspace(0, n - 1, rows).astype(np.intp)]
    per_row = min(_iteration_seconds(probe, k, ctype, model) for _ in range(_REPEATS)) / rows
    trials = max(1, int(model.init_trials))
    seeded_rows = min(n, _TRIAL_ROWS) if trials > 1 else n
    seeding = 0.0
    if model.init_params in ("k-means++", "kmeans"):
        # One candidate's pass over the rows k-means++ seeds on, as it runs.
        sample = X[np.linspace(0, n - 1, min(seeded_rows, _PROBE_ELEMENTS)).astype(np.intp)]
        centre = sample[:1].astype(np.float64)
        per_pass = min(_seconds(_nearest, sample, centre) for _ in range(_REPEATS)) / len(sample)
        seeding = k * (2 + int(math.log(k))) * per_pass  # per seeded row
    trial_iter = min(_TRIAL_ITER, int(model.max_iter)) if trials > 1 else 0
    start = trials * seeded_rows * (seeding + trial_iter * per_row)
    n_init = max(1, int(model.n_init))
    iteration = per_row * n
    total = n_init * (start + int(model.max_iter) * iteration) + per_row * (
        n if n_label is None else int(n_label))
    return FitCost(iteration, n_init * start, total)


def _seconds(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _iteration_seconds(probe, k, ctype, model):
    """Seconds of one EM iteration of a K-component mixture on ``probe``."""
    d = probe.shape[1]
    starts = probe[np.linspace(0, len(probe) - 1, k).astype(np.intp)]
    unit = {"full": np.broadcast_to(np.eye(d), (k, d, d)), "tied": np.eye(d)}.get(
        ctype, np.ones(_covariance_shape(ctype, k, d)))
    timed = GaussianMixture(
        k, covariance_type=ctype, reg_covar=model.reg_covar, max_iter=1, n_init=1,
        weights_init=np.full(k, 1.0 / k), means_init=starts, precisions_init=unit,
        n_jobs=model.n_jobs, init_trials=1, dtype=model.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one iteration never converges: that is the point
        return _seconds(timed.fit, probe)
