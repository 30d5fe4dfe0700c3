"""The `GaussianMixture` estimator: parameters, fitted state and the EM loop.

This module owns the estimator: scikit-learn's parameters, methods and fitted
attributes (so that it can be swapped in for
``sklearn.mixture.GaussianMixture``), the EM loop over initialisations, and
turning its state into plain data for model files.  The maths it runs lives
in module-level functions of arrays: the per-row kernels and the M-step in
`_em`, parameter conversions in `_parameters`, seeding in `_init`, input
checks in `_validation`.  Model selection (the K sweep) is in `selection`;
file formats are `gmmseg.io`'s.
"""

from __future__ import annotations

import logging
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .._system import available_cpus, single_threaded_blas
from ..errors import ConvergenceWarning, ModelFileError, TooFewDistinctRowsError
from . import _em
from ._em import (
    _augmented_for_passes,
    _chunk_rows,
    _compiled_stats,
    _emptied,
    _m_step_moments,
    _pack_state,
    _reseed_empty,
    _run_e_step,
    _run_stats,
    _Runner,
)
from ._estimator import _Estimator
from ._init import (
    _TRIAL_ITER,
    _has_n_distinct_rows,
    _initial_responsibilities,
    _moments,
    _too_few_distinct,
    _trial_subsample,
)
from ._parameters import (
    _add_diagonal,
    _cholesky_factors,
    _covariances_from_precision_cholesky,
    _finish_covariances,
    _full_factors,
    _n_parameters,
    _precisions_from_cholesky,
    canonical_order,
)
from ._validation import (
    _check_dtype,
    _check_init_arrays,
    _check_init_params,
    _check_integer,
    _check_non_negative,
    _check_sample_weight,
    _check_saved_arrays,
    _check_X,
    check_covariance_type,
    check_n_components,
)

# ``gmmseg.mixture``: the logger name the docs give, that of the package.
logger = logging.getLogger(__package__)

# How many times a non positive definite covariance is retried with a ten
# times larger reg_covar before giving up.
_MAX_REG_RETRIES = 6
_FIT_FAILED_HINT = (
    "try fewer components, increase reg_covar, or scale the input data"
)
# The fitted arrays a model file holds.
_SAVED_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


class GaussianMixture(_Estimator):
    """Gaussian mixture model fitted by expectation-maximisation.

    A drop-in for :class:`sklearn.mixture.GaussianMixture` (same parameter
    names, methods and fitted attributes) that is much faster on many rows of
    few features, such as the per-pixel features of an image.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components K.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Full matrix per component, one full matrix shared by all, a diagonal
        per component, or a single variance per component.
    tol : float, default=1e-3
        Convergence threshold on the change of the *mean* per-sample
        log-likelihood, so it does not depend on the number of rows.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance.  If a covariance is still
        not positive definite it is retried with ten times more, with a
        warning; the value used in the end is ``reg_covar_``.
    max_iter : int, default=100
        Maximum number of EM iterations per initialisation.
    n_init : int, default=1
        Number of initialisations; the one with the best lower bound is kept.
    init_params : {"k-means++", "kmeans", "random", "random_from_data"}
        "k-means++": k-means++ seeds, every row assigned to its nearest seed.
        "kmeans": the same followed by a few vectorised Lloyd iterations.
        "random": random soft responsibilities.  "random_from_data": K random
        rows as seeds, every row assigned to its nearest seed.
    weights_init : (K,) array-like, optional
    means_init : (K, D) array-like, optional
    precisions_init : array-like, optional
        Shape ``(K, D, D)`` (full), ``(D, D)`` (tied), ``(K, D)`` (diag) or
        ``(K,)`` (spherical).  Given all three initial arrays, no other
        initialisation work is done.
    random_state : int, numpy Generator or None
        Seed for the initialisation.
    init_trials : int, default=10
        Each initialisation is the best of this many short runs ("small EM"):
        ``init_params`` seeding plus up to 50 EM iterations on a random
        subsample of at most 20,000 rows; full EM then starts from the most
        likely.  This finds markedly better optima than one seeding for about
        the cost of one EM iteration over all rows (see the README).
        ``1`` starts directly from one seeding on all rows, as scikit-learn
        does.  Not used when ``means_init`` is given.
    warm_start : bool, default=False
        Start ``fit`` from the current fitted parameters (``n_init`` ignored).
    verbose : int, default=0
        Log progress at INFO level every ``verbose_interval`` iterations
        (``logging`` logger ``gmmseg.mixture``).
    verbose_interval : int, default=10
    dtype : {None, "float32", "float64"}, default=None
        Compute precision of EM and of the outputs (``predict_proba``,
        ``score_samples``, ...).  ``None`` follows the data, as scikit-learn
        does: float32 arrays are computed in float32 (the image pipeline's
        features: about 10-20% faster and half the memory), anything else in
        float64.  ``"float32"`` asks for float32 whatever the input.  Sums and
        log-likelihoods are always accumulated in float64.
    n_jobs : int, optional
        Number of threads (default: all available cores).
    chunk_size : int, optional
        Rows per chunk (default: chosen from K and D to fit in cache).

    Attributes
    ----------
    weights_ : (K,) ndarray
    means_ : (K, D) ndarray
    covariances_ : ndarray
        Shaped as ``precisions_init``.
    precisions_cholesky_ : ndarray
        Cholesky factors of the precision matrices, same shapes.
    precisions_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean per-sample log-likelihood of the best run at its last iteration.
    lower_bounds_ : list of float
        The mean per-sample log-likelihood at every iteration of the best
        run, ``n_iter_`` values ending with ``lower_bound_``.
    reg_covar_ : float
        The regularisation actually used (``reg_covar`` unless it had to grow).
    n_features_in_ : int
    feature_names_in_ : (n_features_in_,) ndarray of str
        Column names of the training data, when it was a data frame with
        string column names; later data must have the same.

    Notes
    -----
    ``fit`` accepts ``sample_weight``: a row with weight ``c`` counts as ``c``
    identical rows.  This is what lets the segmentation pipeline fit on a
    random subsample of pixels, or on the unique pixel values with their
    counts, and still get the maximum-likelihood mixture of the whole image.

    It follows scikit-learn's estimator protocol (``get_params``/``set_params``,
    tags, ``check_is_fitted``, ``n_features_in_``), so ``clone``, ``Pipeline``
    and ``GridSearchCV`` (which ranks by ``score``) accept it, without
    scikit-learn being needed to use it.  It pickles, but ``save``/``load``
    write files that are safe to open and checked when read.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(8, 1, (200, 2))])
    >>> gm = GaussianMixture(2, random_state=0).fit(X)
    >>> bool(np.allclose(np.sort(gm.means_[:, 0]), [0, 8], atol=0.3))
    True
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="k-means++",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        init_trials=10,
        dtype=None,
        n_jobs=None,
        chunk_size=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.init_trials = init_trials
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size

    # ----- validation -----------------------------------------------------

    def _check_params(self):
        check_n_components(self.n_components)
        _check_integer(self.max_iter, "max_iter", 0)
        _check_integer(self.n_init, "n_init", 1)
        _check_integer(self.init_trials, "init_trials", 1)
        check_covariance_type(self.covariance_type)
        _check_init_params(self.init_params)
        _check_non_negative(self.tol, "tol")
        _check_non_negative(self.reg_covar, "reg_covar")
        if self.n_jobs is not None:
            _check_integer(self.n_jobs, "n_jobs", 1)
        if self.chunk_size is not None:
            _check_integer(self.chunk_size, "chunk_size", 1)
        _check_dtype(self.dtype)

    def _validate_X(self, X, *, fitting):
        """``X`` as the compute array; outside ``fit``, checked against the training data."""
        if not fitting:
            self._check_fitted()
        X_in = X
        X = _check_X(X, _check_dtype(self.dtype))
        if not fitting:
            self._check_columns(X_in, X.shape[1])
        return X

    # ----- parameter state ------------------------------------------------

    def _set_params_from_covariances(self, weights, means, covariances):
        """Set fitted parameters, growing reg_covar if a covariance is not PD."""
        ctype = self.covariance_type
        reg = self.reg_covar_
        for attempt in range(_MAX_REG_RETRIES + 1):
            try:
                prec_chol = _cholesky_factors(covariances, ctype)
                break
            except np.linalg.LinAlgError as err:
                if attempt == _MAX_REG_RETRIES or not np.all(np.isfinite(covariances)):
                    raise ValueError(
                        f"fitting the mixture failed: the covariance of {err} is not "
                        f"positive definite even with reg_covar={reg:g} (collapsed or "
                        f"duplicated samples); {_FIT_FAILED_HINT}"
                    ) from err
                new_reg = max(reg * 10.0, 1e-6)
                warnings.warn(
                    f"covariance of {err} is not positive definite; retrying with "
                    f"reg_covar={new_reg:g}",
                    RuntimeWarning,
                    stacklevel=4,
                )
                covariances = _add_diagonal(covariances, new_reg - reg, ctype)
                reg = new_reg
        self.reg_covar_ = reg
        self.weights_ = weights
        self.means_ = means
        self.covariances_ = covariances
        self.precisions_cholesky_ = prec_chol

    def _full_factors(self):
        """``(P, C)`` as ``(K, D, D)``: precision Cholesky and its inverse transpose."""
        return _full_factors(self.precisions_cholesky_, self.covariance_type, *self.means_.shape)

    def _state(self, dtype):
        p_full, _ = self._full_factors()
        return _pack_state(
            self.weights_, self.means_, p_full, dtype,
            diagonal=self.covariance_type in ("diag", "spherical"),
        )

    @property
    def precisions_(self):
        self._check_fitted()
        return _precisions_from_cholesky(self.precisions_cholesky_, self.covariance_type)

    # ----- initialisation -------------------------------------------------

    def _initialize(self, X, w, rng, given):
        k = self.n_components
        ctype = self.covariance_type
        diagonal = ctype in ("diag", "spherical")
        if {"weights", "means", "prec_chol"} <= given.keys():
            self.weights_ = given["weights"].copy()
            self.means_ = given["means"].copy()
            self.precisions_cholesky_ = given["prec_chol"].copy()
            self.covariances_ = _covariances_from_precision_cholesky(
                self.precisions_cholesky_, ctype)
            return
        resp = _initial_responsibilities(X, w, rng, k, self.init_params, given.get("means"))
        weights, means, cov_k, nk = _moments(X, w, resp, k, diagonal)
        covariances = _finish_covariances(cov_k, nk, ctype, self.reg_covar_)
        if "means" in given:
            means = given["means"].copy()
        self._set_params_from_covariances(
            given.get("weights", weights).copy(), means, covariances)
        if "prec_chol" in given:
            self.precisions_cholesky_ = given["prec_chol"].copy()
            self.covariances_ = _covariances_from_precision_cholesky(
                self.precisions_cholesky_, ctype)

    # ----- EM ----------------------------------------------------------------

    def _m_step(self, stats, X, w, runner, state):
        """New parameters from the whitened sufficient statistics."""
        _, c_full = self._full_factors()
        nk, means, cov_k, weights = _m_step_moments(
            stats, self.means_, c_full, self.covariance_type in ("diag", "spherical"))
        # A component with (almost) no responsibility left is re-seeded on the
        # rows the current model explains worst, rather than left to NaN.
        empty = _emptied(stats.nk, len(X))
        if empty.any():
            log_lik = _run_e_step(X, runner, state, self.n_components,
                                  labels=False, proba=False).log_likelihood
            means, cov_k, weights = _reseed_empty(empty, means, cov_k, weights, nk, X, log_lik)
            logger.info("re-seeded empty components %s on badly explained rows",
                        np.flatnonzero(empty).tolist())
        covariances = _finish_covariances(cov_k, nk, self.covariance_type, self.reg_covar_)
        self._set_params_from_covariances(weights, means, covariances)

    def _run_stats(self, X, w, runner, state, resp=None, augmented=None):
        full_stats = self.covariance_type in ("full", "tied")
        return _run_stats(X, w, runner, state, full_stats, resp, augmented)

    def _runner(self, X):
        return _Runner(
            len(X),
            _chunk_rows(self.n_components, X.shape[1], self.chunk_size),
            self.n_jobs or available_cpus(),
            X.dtype,
        )

    def fit(self, X, y=None, sample_weight=None):
        """Estimate the mixture parameters by EM.

        Parameters
        ----------
        X : (N, D) array-like
        y : ignored
        sample_weight : (N,) array-like, optional
            Non-negative row weights; a weight ``c`` counts like ``c`` copies
            of the row (fit on unique values with their counts, or on a
            subsample, with the same result as on the full data).

        Returns
        -------
        self
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the labels of ``X`` (equal to ``fit(X).predict(X)``)."""
        X = self._fit(X, sample_weight)
        with self._runner(X) as runner:
            return _run_e_step(
                X, runner, self._state(X.dtype), self.n_components,
                proba=False, log_likelihood=False,
            ).labels

    def _fit(self, X, sample_weight):
        # Initialisation (seeding, moments) is thin matrix work too: BLAS
        # threads only add overhead and contention there, as in the EM passes.
        with single_threaded_blas():
            return self._fit_pinned(X, sample_weight)

    def _fit_pinned(self, X, sample_weight):
        self._check_params()
        X_in, X = X, self._validate_X(X, fitting=True)
        n, d = X.shape
        k = self.n_components
        w = _check_sample_weight(sample_weight, n)
        if n < k:
            raise TooFewDistinctRowsError(f"n_components={k} must be <= n_samples={n}")
        given = _check_init_arrays(self.weights_init, self.means_init, self.precisions_init,
                                   k, d, self.covariance_type)
        warm = self.warm_start and self.__sklearn_is_fitted__()
        if warm and self.means_.shape != (k, d):
            raise ValueError("warm_start needs the same n_components and n_features")
        if not warm and not {"weights", "means", "prec_chol"} <= given.keys():
            if not _has_n_distinct_rows(X, w, k):
                raise _too_few_distinct(k)
        if not warm:
            # A fit that fails from here on leaves an unfitted model, not a
            # mix of the old one and the new data's first parameters.
            self.__dict__.pop(self._FITTED_MARKER, None)
        rng = np.random.default_rng(self.random_state)
        n_init = 1 if warm else self.n_init
        best = None
        for init in range(n_init):
            if not warm:
                self.reg_covar_ = float(self.reg_covar)
                if self.init_trials > 1 and "means" not in given:
                    self._screened_initialize(X, w, rng, given)
                else:
                    self._initialize(X, w, rng, given)
            lower_bounds = []
            lower_bound, n_iter, converged = self._em(X, w, lower_bounds=lower_bounds)
            if best is None or lower_bound > best[0]:
                best = (lower_bound, n_iter, converged, lower_bounds, self._fitted_state())
            logger.debug("init %d: lower bound %.6f after %d iterations", init, lower_bound, n_iter)
        lower_bound, n_iter, converged, lower_bounds, fitted = best
        self._restore_state(fitted)
        self.lower_bound_ = lower_bound
        self.lower_bounds_ = lower_bounds
        self.n_iter_ = n_iter
        self.converged_ = converged
        self._record_training_columns(X_in, d)
        if not converged and self.max_iter > 0:
            warnings.warn(
                f"EM did not converge in max_iter={self.max_iter} iterations "
                f"(tol={self.tol}); try a larger max_iter or tol, or a better "
                "initialisation",
                ConvergenceWarning,
                stacklevel=3,
            )
        return X

    def _screened_initialize(self, X, w, rng, given):
        """Best of ``init_trials`` short EM runs on a subsample ("small EM").

        Biernacki, Celeux & Govaert (2003) found that running a few EM
        iterations from several starts and keeping the most likely one finds
        better optima than one long run from one start; on a subsample it
        costs about one EM iteration over all rows.  The trials are
        independent: they run side by side, one per thread (each on one
        thread, with its own random generator drawn from ``rng`` in order, so
        the result does not depend on the number of threads).
        """
        sub_x, sub_w = _trial_subsample(X, w, rng)
        if sub_x is not X and not _has_n_distinct_rows(sub_x, sub_w, self.n_components):
            sub_x, sub_w = X, w  # a rare value the subsample missed
        params = self.get_params()
        jobs = [(params, sub_x, sub_w, trial_rng, None, given)
                for trial_rng in _trial_generators(rng, self.init_trials)]
        screened = _short_ems(jobs, self.n_jobs or available_cpus())
        failed = [r for r in screened if isinstance(r, ValueError)]
        if failed:
            raise failed[0]
        best = max(range(len(screened)), key=lambda i: (screened[i][0], -i))  # first of equals
        self._restore_state(screened[best][1])

    def _em(self, X, w, max_iter=None, lower_bounds=None, previous=-np.inf):
        """EM from the current parameters: ``(lower bound, n_iter, converged)``.

        ``lower_bounds``, a list, receives the lower bound of every iteration;
        ``previous``, the lower bound of an iteration before these (EM taken
        over half-way), counts for convergence at the first.
        """
        max_iter = self.max_iter if max_iter is None else max_iter
        lower_bounds = [] if lower_bounds is None else lower_bounds
        lower_bound = previous
        converged = False
        n_iter = 0
        total_weight = float(len(X) if w is None else w.sum())
        augmented = _augmented_for_passes(X)
        with self._runner(X) as runner:
            for n_iter in range(1, max_iter + 1):
                previous = lower_bound
                state = self._state(X.dtype)
                stats = self._run_stats(X, w, runner, state, augmented=augmented)
                lower_bound = stats.log_lik / total_weight
                lower_bounds.append(lower_bound)
                self._m_step(stats, X, w, runner, state)
                if self.verbose and n_iter % self.verbose_interval == 0:
                    logger.info("iteration %d: mean log-likelihood %.6f", n_iter, lower_bound)
                if abs(lower_bound - previous) < self.tol:
                    converged = True
                    break
        return lower_bound, n_iter, converged

    def _fitted_state(self):
        return {name: getattr(self, name).copy() if isinstance(getattr(self, name), np.ndarray)
                else getattr(self, name)
                for name in ("weights_", "means_", "covariances_",
                             "precisions_cholesky_", "reg_covar_")}

    def _restore_state(self, state):
        for name, value in state.items():
            setattr(self, name, value)

    # ----- inference ---------------------------------------------------------

    def e_step(self, X, *, labels=True, proba=True, log_likelihood=True):
        """Labels, responsibilities and log densities of ``X`` in one pass.

        Parameters
        ----------
        X : (N, D) array-like
        labels, proba, log_likelihood : bool
            Which outputs to compute; the others are ``None``.

        Returns
        -------
        EStepResult
            ``labels`` (N,) int32, ``proba`` (N, K) and ``log_likelihood``
            (N,) in the compute dtype: ``X``'s (float32 stays float32,
            anything else is float64) unless ``dtype`` is set.
        """
        X = self._validate_X(X, fitting=False)
        with self._runner(X) as runner:
            return _run_e_step(
                X, runner, self._state(X.dtype), self.n_components,
                labels=labels, proba=proba, log_likelihood=log_likelihood,
            )

    def component_log_prob(self, X):
        """``log w_k + log N(x_n | mu_k, Sigma_k)`` as a ``(K, N)`` array.

        Component-major, in the compute dtype: the unary term a spatial prior
        (:mod:`gmmseg.mrf`) combines with the neighbours' labels.
        """
        X = self._validate_X(X, fitting=False)
        with self._runner(X) as runner:
            return _run_e_step(
                X, runner, self._state(X.dtype), self.n_components, labels=False, proba=False,
                log_likelihood=False, component_log_prob=True,
            ).component_log_prob

    def m_step(self, X, resp, sample_weight=None):
        """Re-estimate the parameters from responsibilities computed elsewhere.

        For E-steps this class does not do itself, such as the mean-field
        E-step of a Markov random field prior.  Same regularisation,
        re-seeding of empty components and covariance handling as ``fit``.

        Parameters
        ----------
        X : (N, D) array-like
        resp : (K, N) array-like
            Responsibilities, component-major; columns should sum to 1.
        sample_weight : (N,) array-like, optional

        Returns
        -------
        self
        """
        X = self._validate_X(X, fitting=False)
        resp = np.ascontiguousarray(resp, dtype=X.dtype)
        if resp.shape != (self.n_components, len(X)):
            raise ValueError(
                f"resp must have shape ({self.n_components}, {len(X)}), got {resp.shape}")
        w = _check_sample_weight(sample_weight, len(X))
        with self._runner(X) as runner:
            state = self._state(X.dtype)
            stats = self._run_stats(X, w, runner, state, resp=resp)
            self._m_step(stats, X, w, runner, state)
        return self

    def predict(self, X):
        """Most probable component of each row, ``(N,)`` int32."""
        return self.e_step(X, proba=False, log_likelihood=False).labels

    def predict_proba(self, X):
        """Posterior probability of each component, ``(N, K)``; rows sum to 1.

        float64 for float64 (or integer) ``X``, float32 for float32 ``X``,
        unless ``dtype`` is set.
        """
        return self.e_step(X, labels=False, log_likelihood=False).proba

    def score_samples(self, X):
        """Log density ``log p(x)`` of each row, ``(N,)``, of the dtype ``predict_proba`` has."""
        return self.e_step(X, labels=False, proba=False).log_likelihood

    def score(self, X, y=None):
        """Mean log density of the rows of ``X`` (float64 accumulation)."""
        return float(self.score_samples(X).mean(dtype=np.float64))

    def _n_parameters(self):
        k, d = self.means_.shape
        return _n_parameters(self.covariance_type, k, d)

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better)."""
        n = np.asarray(X).shape[0]
        return -2.0 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better)."""
        n = np.asarray(X).shape[0]
        return -2.0 * self.score(X) * n + 2.0 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draw ``n_samples`` rows from the fitted mixture.

        Returns
        -------
        X : (n_samples, D) ndarray
        y : (n_samples,) ndarray of int
            The component each row was drawn from.
        """
        self._check_fitted()
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        rng = np.random.default_rng(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_ / self.weights_.sum())
        _, c_full = self._full_factors()
        d = self.means_.shape[1]
        xs, ys = [], []
        for k, count in enumerate(counts):
            z = rng.standard_normal((count, d))
            xs.append(self.means_[k] + z @ c_full[k].T)
            ys.append(np.full(count, k))
        return np.concatenate(xs), np.concatenate(ys)

    # ----- ordering --------------------------------------------------------

    def reorder(self, order):
        """Permute the components in place: new component ``i`` is old ``order[i]``."""
        self._check_fitted()
        order = np.asarray(order)
        if sorted(order.tolist()) != list(range(len(self.weights_))):
            raise ValueError(f"order must be a permutation of 0..{len(self.weights_) - 1}")
        self.weights_ = self.weights_[order]
        self.means_ = self.means_[order]
        if self.covariance_type != "tied":
            self.covariances_ = self.covariances_[order]
            self.precisions_cholesky_ = self.precisions_cholesky_[order]
        return self

    def sort_components(self):
        """Put components in canonical order (see :func:`canonical_order`).

        Returns the permutation applied, so that responsibilities computed
        before can be reordered the same way.
        """
        order = canonical_order(self.means_)
        self.reorder(order)
        return order

    # ----- persistence -----------------------------------------------------

    def _payload(self):
        params = {name: value for name, value in self.get_params().items()
                  if name not in ("weights_init", "means_init", "precisions_init")}
        if not isinstance(params["random_state"], (int, type(None))):
            params["random_state"] = None
        return {
            "params": params,
            "fitted": {
                "converged_": bool(self.converged_),
                "n_iter_": int(self.n_iter_),
                "lower_bound_": float(self.lower_bound_),
                "lower_bounds_": [float(v) for v in self.lower_bounds_],
                "reg_covar_": float(self.reg_covar_),
            },
        }

    def save(self, path, *, metadata=None):
        """Write the fitted model to ``.npz`` (default) or ``.json``; never pickle.

        Parameters
        ----------
        path : str or Path
            The suffix chooses the format.
        metadata : dict, optional
            JSON-serialisable extra information stored with the model (the
            pipeline records its feature specification here).
        """
        # Files belong to io; the estimator only (de)serialises its state.
        from ..io.model_file import write_model_file

        self._check_fitted()
        info = self._payload()
        info["metadata"] = metadata if metadata is not None else getattr(self, "metadata_", {})
        write_model_file(path, {name: getattr(self, name) for name in _SAVED_ARRAYS}, info)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`, checking it thoroughly.

        Raises
        ------
        ModelFileError
            The file is missing, not a gmmseg model, of an unknown format
            version, or its contents were altered or are inconsistent.
        """
        # Files belong to io; the estimator only (de)serialises its state.
        from ..io.model_file import read_model_file

        arrays, info = read_model_file(path, _SAVED_ARRAYS)
        try:
            model = cls(**info["params"])
            model._check_params()
            model._restore_saved(arrays, info)
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as err:
            raise ModelFileError(f"{Path(path)}: inconsistent model parameters: {err}") from err
        return model

    def _restore_saved(self, arrays, info):
        _check_saved_arrays(arrays, self.covariance_type, self.n_components)
        for name, value in arrays.items():
            setattr(self, name, value)
        for name, value in info["fitted"].items():
            setattr(self, name, value)
        self.n_features_in_ = arrays["means_"].shape[1]
        self.metadata_ = info.get("metadata") or {}


def _trial_generators(rng, n):
    """``n`` independent generators drawn from ``rng``, in order."""
    return [np.random.default_rng(seed) for seed in rng.integers(0, 2**63, size=n)]


def _short_em(params, x, w, rng, start=None, given=None):
    """One "small EM" trial, on one thread: ``(lower bound, fitted state)``.

    Starts from ``start`` ``(weights, means, covariances)``, or else from
    ``params``' own initialisation drawn from ``rng`` (with the initial
    arrays ``given``), then runs at most ``_TRIAL_ITER`` EM iterations on ``x``.
    """
    model = _trial_model(params, x, w, rng, start, given)
    if isinstance(model, ValueError):
        raise model
    lower_bound, _, _ = model._em(x, w, max_iter=min(_TRIAL_ITER, model.max_iter))
    return lower_bound, model._fitted_state()


def _trial_model(params, x, w, rng, start=None, given=None):
    """A trial's model at its start (what `_short_em` iterates from), or the
    ``ValueError`` of a start that cannot be set."""
    model = GaussianMixture(**(params | {"n_jobs": 1}))
    model.n_features_in_ = x.shape[1]
    model.reg_covar_ = float(model.reg_covar)
    try:
        if start is None:
            model._initialize(x, w, rng, given or {})
        else:
            model._set_params_from_covariances(*start)
    except ValueError as err:
        return err
    return model


def _short_ems(jobs, n_threads):
    """``[_short_em(*job) for job in jobs]``, the ``ValueError`` of a failed one in its place.

    With the compiled kernels, trials on the same rows run side by side:
    every iteration is one pass over the rows for all the trials still
    running (the kernel normalises each trial's components on their own)
    and one M-step for all of them, so the Python work of an iteration is
    paid once, not once per trial (where the GIL serialised it).  A trial
    stops by the same rule as alone (``tol``, ``_TRIAL_ITER``); its sums
    differ from a lone trial's in the last bits only (the rows are summed
    in four fixed pieces rather than one, so the result does not depend on
    the number of threads either).  One whose M-step needs more than the
    plain update (an emptied component to re-seed, a covariance that is
    not positive definite) goes on alone from that iteration.  Otherwise
    (NumPy kernels, tied covariances, trials on different rows) each trial
    runs alone on a thread.
    """
    params, x, w = jobs[0][:3]
    limit = min(_TRIAL_ITER, params["max_iter"])
    if not (_em._use_compiled() and params["covariance_type"] != "tied" and limit > 0
            and all(j[0] is params and j[1] is x and j[2] is w for j in jobs)):
        return _map_trials(_failure_or_short_em, jobs, n_threads)
    results = _map_trials(_trial_model, jobs, n_threads)
    live = [i for i, r in enumerate(results) if isinstance(r, GaussianMixture)]
    models = {i: results[i] for i in live}
    lower = dict.fromkeys(live, -np.inf)
    ctype = params["covariance_type"]
    diagonal = ctype in ("diag", "spherical")
    total_weight = float(len(x) if w is None else w.sum())
    w_rows = None if w is None else np.ascontiguousarray(w, dtype=x.dtype)  # once, not per pass
    quarter = -(-len(x) // 4)
    pieces = [slice(s, min(s + quarter, len(x))) for s in range(0, len(x), quarter)]
    pool = ThreadPoolExecutor(max(1, min(int(n_threads), len(pieces))))
    try:
        for iteration in range(1, limit + 1):
            if not live:
                break
            step = _side_by_side_step([models[i] for i in live], x, w_rows, pieces, pool,
                                      diagonal, total_weight)
            for i, (lower_bound, update) in zip(list(live), step):
                previous, lower[i] = lower[i], lower_bound
                model = models[i]
                if update is None:  # this iteration again, alone, and the rest
                    try:
                        lower[i], _, _ = model._em(x, w, max_iter=limit - iteration + 1,
                                                   previous=previous)
                    except ValueError as err:
                        results[i] = err
                    live.remove(i)
                    continue
                (model.weights_, model.means_, model.covariances_,
                 model.precisions_cholesky_) = update
                if abs(lower_bound - previous) < model.tol:
                    live.remove(i)
    finally:
        pool.shutdown()
    for i, model in models.items():
        if not isinstance(results[i], ValueError):
            results[i] = (lower[i], model._fitted_state())
    return results


def _side_by_side_step(models, x, w, pieces, pool, diagonal, total_weight):
    """One EM iteration of several models of K components on the same rows.

    Returns, per model, its lower bound before the update and its new
    ``(weights, means, covariances, precision Cholesky factors)``, or None
    where the plain update does not do (see `_short_ems`).
    """
    k, d = models[0].means_.shape
    ctype = models[0].covariance_type
    means = np.concatenate([m.means_ for m in models])
    prec_chol = np.concatenate([m.precisions_cholesky_ for m in models])
    p_full, c_full = _full_factors(prec_chol, ctype, len(means), d)
    state = _pack_state(np.concatenate([m.weights_ for m in models]), means, p_full,
                        x.dtype, diagonal)
    parts = pool.map(lambda rows: _compiled_stats(x, w, rows, state, not diagonal, k), pieces)
    stats = None
    for part in parts:  # in piece order, whatever the threads
        stats = part if stats is None else stats + part
    nk, new_means, cov_k, _ = _m_step_moments(stats, means, c_full, diagonal)
    empty = _emptied(stats.nk.reshape(len(models), k), len(x)).any(axis=1)
    weights = nk.reshape(len(models), k)
    weights = weights / weights.sum(1, keepdims=True)
    # Each model's own reg_covar_ (a start may have needed a larger one),
    # one per component: against the diagonal of each (full, diag) or alone.
    reg = np.repeat([m.reg_covar_ for m in models], k)
    covariances = _finish_covariances(cov_k, nk, ctype,
                                      reg if ctype == "spherical" else reg[:, None])
    try:
        factors = _cholesky_factors(covariances, ctype)
    except np.linalg.LinAlgError:
        factors = None
    step = []
    for g, model in enumerate(models):
        sl = slice(g * k, (g + 1) * k)
        update = None
        if not empty[g]:
            try:
                own = factors[sl] if factors is not None else _cholesky_factors(
                    covariances[sl], ctype)
                update = (weights[g], new_means[sl], covariances[sl], own)
            except np.linalg.LinAlgError:
                pass  # not positive definite: this model goes on alone
        step.append((stats.log_lik[g] / total_weight, update))
    return step


def _failure_or_short_em(*args):
    """`_short_em`, or the ``ValueError`` of a start whose fit failed."""
    try:
        return _short_em(*args)
    except ValueError as err:
        return err


def _map_trials(fn, jobs, n_threads):
    """``[fn(*job) for job in jobs]``, spread over up to ``n_threads`` threads.

    Short EM runs release the GIL in their matrix products and OpenCV calls,
    so independent trials keep every core busy where one trial's chunks
    could not (a trial's subsample is only a few chunks).  BLAS stays pinned
    to one thread by the caller.
    """
    n_threads = max(1, min(int(n_threads), len(jobs)))
    if n_threads == 1:
        return [fn(*job) for job in jobs]
    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(lambda job: fn(*job), jobs))
