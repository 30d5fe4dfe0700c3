"""Model selection: one mixture per K (and covariance type), the best by BIC, AIC or ICL.

This module owns the K sweep, `select_k` and its `SelectKResult`, the
criteria, and the work the sweep shares between K: one subsample and one
set of k-means++ seeds for the short screening runs, and starts grown from
the fitted K - 1 mixture or split from it.  It fits through
:class:`GaussianMixture` and adds no EM of its own; it touches no files.

BIC and AIC measure how well the mixture fits the density: a cluster that
is not Gaussian (skewed, flat-topped, clipped) is fitted better by several
overlapping components, which they reward.  ICL, BIC plus twice the entropy
of the responsibilities (Biernacki, Celeux & Govaert 2000: the BIC
approximation of the integrated completed likelihood), charges every row
whose component is uncertain, so overlapping components cost more than they
gain and K counts the clusters that stand apart, as mclust's ``mclustICL``
does.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._system import available_cpus, single_threaded_blas
from ..errors import TooFewDistinctRowsError, one_line
from ._gaussian_mixture import (
    GaussianMixture,
    _short_ems,
    _trial_generators,
)
from ._init import (
    _has_n_distinct_rows,
    _kmeans_plusplus,
    _lloyd,
    _moments,
    _n_distinct_rows,
    _nearest,
    _too_few_distinct,
    _trial_subsample,
)
from ._parameters import _finish_covariances, _n_parameters, _precisions_from_cholesky
from ._validation import (
    COVARIANCE_TYPES,
    CRITERIA,
    _check_sample_weight,
    check_covariance_type,
    check_criterion,
    check_k_values,
)

# Extra screening starts for K grown from the fitted (K - 1)-component mixture.
_GROWN_TRIALS = 3
# Extra screening starts for K with one component of the K - 1 fit split in two
# (two: one missed a merged pair of small grey levels under a large one).
_SPLIT_TRIALS = 2
#: Mean classification entropy per fit row, in nats, at or under which ICL's
#: clusters are clear and criterion="auto" takes ICL's count: on average a
#: row's cluster is known to about 98%.  It lies in the gap between images
#: whose segments are clear (``scripts/check_select_k.py``'s synthetic
#: photos, grey and 4-band images) and BSDS500 photos, whose colours vary
#: without clear gaps (``select-k`` prints the entropy of every K).
CLEAR_ENTROPY = 0.1
# The criteria and curves every row of the sweep has.
_CURVES = ("bic", "aic", "icl", "entropy", "log_likelihood")
# Smallest responsibility whose log is taken (0 log 0 counts as 0).
_TINY = np.finfo(np.float64).tiny
# Parameters select_k sets for every fit itself.
_PER_FIT_PARAMS = ("n_components", "covariance_type", "weights_init", "means_init",
                   "precisions_init", "warm_start")


@dataclass(eq=False, repr=False)
class SelectKResult:
    """What :func:`select_k` found: one row per fitted K, the choice, the models.

    Attributes
    ----------
    rows : list of dict
        One per (covariance type, K), in the order fitted (covariance type
        first, then K).  Keys: ``n_components``, ``covariance_type``,
        ``n_parameters``, ``log_likelihood`` (total over the fit rows,
        weighted), ``mean_log_likelihood``, ``bic``, ``aic``, ``entropy``
        (the classification entropy ``-sum_n sum_k t_nk log t_nk`` of the
        responsibilities ``t``, weighted), ``icl`` (``bic + 2 entropy``), ``n_iter``,
        ``converged``, ``start`` (which screening start won: ``"fresh"``
        seeding, ``"grown"`` or ``"split"`` from the K - 1 fit), ``seconds``, ``warnings``
        (messages of the warnings the fit raised, recorded rather than
        re-raised) and ``error`` (why K could not be fitted, else None; the
        numbers are then None).
    criterion : {"auto", "icl", "bic", "aic"}
    n_components : int
        The chosen K.
    covariance_type : str
        The chosen covariance type.
    model : GaussianMixture
        The chosen fitted mixture.
    n_samples : float
        Number of fit rows (sum of the weights) the criteria are computed on.
    models : dict
        ``(covariance_type, K) -> GaussianMixture`` for every row without error.
    info : dict
        Timings and details of the shared work (``trial_rows``,
        ``seeding_seconds``, ``seconds``).
    features : FeatureExtractor or None
        Set by :func:`gmmseg.select_k`: the fitted extractor of the features.
    count : SelectKResult or None
        Set by :func:`gmmseg.select_k`: the sweep that counts the clusters of
        the pixels' appearance (by ICL), beside this one of the model's
        features.
    """

    rows: list
    criterion: str
    n_components: int
    covariance_type: str
    model: GaussianMixture
    n_samples: float
    models: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    features: object = None
    count: object = None
    _warnings: dict = field(default_factory=dict)

    def __repr__(self):
        return (f"SelectKResult(criterion={self.criterion!r}, n_components={self.n_components}, "
                f"covariance_type={self.covariance_type!r}, rows={len(self.rows)})")

    @property
    def best_row(self):
        """The row of the chosen model."""
        return next(r for r in self.rows if r["n_components"] == self.n_components
                    and r["covariance_type"] == self.covariance_type)

    def curve(self, covariance_type=None):
        """K values and criteria of one covariance type (default: the chosen one).

        Returns
        -------
        dict
            ``k_values``, ``bic``, ``aic``, ``icl``, ``entropy``,
            ``log_likelihood`` as lists of the same length; None where a K
            could not be fitted.
        """
        ctype = self.covariance_type if covariance_type is None else covariance_type
        rows = [r for r in self.rows if r["covariance_type"] == ctype]
        if not rows:
            raise ValueError(f"no fits with covariance_type={ctype!r}")
        return {"k_values": [r["n_components"] for r in rows],
                **{name: [r[name] for r in rows] for name in _CURVES}}

    def best_by(self, criterion):
        """The ``(K, covariance type)`` a criterion chooses.

        With a ``count``, "icl" is the count's choice and "auto" the count's
        where :attr:`clear`, else BIC's among these rows.

        Parameters
        ----------
        criterion : {"auto", "icl", "bic", "aic"}

        Returns
        -------
        (int, str)
        """
        criterion = check_criterion(criterion)
        if self.count is not None and criterion in ("icl", "auto"):
            if criterion == "icl" or self.count.clear:
                return self.count.best_by("icl")
            criterion = "bic"
        best = _chosen_row(self.rows, criterion, self.n_samples)
        return best["n_components"], best["covariance_type"]

    @property
    def clear(self):
        """Whether ICL's choice (the count's, if any) is a clear count of clusters.

        See ``criterion="auto"`` in :func:`select_k`.
        """
        if self.count is not None:
            return self.count.clear
        return _is_clear(self.rows, self.n_samples)

    def summary(self):
        """The choice and the criterion curve(s), JSON-ready (for reports)."""
        n = self.n_samples
        out = {
            "criterion": self.criterion,
            "chosen": int(self.n_components),
            "covariance_type": self.covariance_type,
            "chosen_by": {c: self.best_by(c)[0] for c in CRITERIA},
            "clear": self.clear,
            "computed_on": "fit sample",
            "fit_samples": int(n) if float(n).is_integer() else float(n),
            **self.curve(),
        }
        ctypes = list(dict.fromkeys(r["covariance_type"] for r in self.rows))
        if len(ctypes) > 1:
            out["curves"] = {ctype: self.curve(ctype) for ctype in ctypes}
        return out

    def reemit_warnings(self):
        """Raise again the warnings the chosen fit recorded (for callers that use it)."""
        for caught in self._warnings.get((self.covariance_type, self.n_components), ()):
            warnings.warn(caught.message, caught.category, stacklevel=2)


def select_k(X, k_values, *, criterion="bic", covariance_types=("full",), sample_weight=None,
             random_state=0, **mixture_params):
    """Fit a mixture for every K (and covariance type); keep the best by BIC, AIC or ICL.

    The criteria are computed on the rows given (with ``sample_weight``,
    weighted: ``n`` is the sum of the weights), so pass the same subsample
    the mixture would be fitted on.  Lower is better:
    ``BIC = -2 log L + p log n``, ``AIC = -2 log L + 2 p`` and
    ``ICL = BIC + 2 EN``, where ``EN = -sum_n sum_k t_nk log t_nk`` is the
    entropy of the responsibilities ``t`` (see the module's docstring for
    what each measures).

    Each K is initialised like :class:`GaussianMixture` ("small EM": the most
    likely of ``init_trials`` short EM runs on one random subsample of at
    most 20,000 rows, then full EM from it), with work shared between K:

    * the short runs of every K use the same subsample, and their k-means++
      seeds are the first K centres of ``init_trials`` k-means++ runs made
      once with the largest K (greedy k-means++ picks centres one by one, so
      a prefix is itself a k-means++ seeding);
    * K also screens ``_GROWN_TRIALS`` starts grown from the fitted K - 1
      mixture plus one new component on badly explained rows (the worst,
      and rows drawn in proportion to their log-likelihood deficit); a
      grown start wins only if its short run is more likely than every
      fresh one;
    * and ``_SPLIT_TRIALS`` starts with one of the K - 1 fit's most
      bimodal components (lowest kurtosis along its principal axis) split
      in two, which undoes a component that covers two clusters;
    * BLAS is pinned to one thread for the whole sweep (the small matrix
      products of seeding are much slower multithreaded).

    Parameters
    ----------
    X : (N, D) array-like
    k_values : iterable of int
        Candidate numbers of components, each >= 1 (sorted, duplicates dropped).
    criterion : {"bic", "aic", "icl", "auto"}, default="bic"
        Every row has BIC, AIC and ICL; this one chooses.  "auto": ICL's K
        where its clusters are clear -- the mean classification entropy
        per row at most :data:`CLEAR_ENTROPY` (0.1 nats), or one cluster
        that BIC does not split either -- else BIC's K.
    covariance_types : str or sequence of str, default=("full",)
        Covariance types to try; every one is fitted for every K.
    sample_weight : (N,) array-like, optional
        Row weights, as in :meth:`GaussianMixture.fit`.
    random_state : int or None, default=0
        Seeds the subsample of the short runs, the seeding and the grown starts.
    **mixture_params
        Other :class:`GaussianMixture` parameters (``tol``, ``reg_covar``,
        ``max_iter``, ``init_params``, ``init_trials``, ``n_jobs``, ...).
        With ``n_init`` > 1, full EM runs from that many of the best
        screened starts.  ``init_params`` other than "k-means++" and
        "kmeans" are drawn per K without sharing.

    Returns
    -------
    SelectKResult

    Raises
    ------
    ValueError
        Bad arguments, or no K could be fitted (every K has more
        components than ``X`` has distinct rows, or every fit failed).
        A K that cannot be fitted while others can is recorded in its row.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(m, 1, (300, 2)) for m in (0, 10, 20)])
    >>> result = select_k(X, range(1, 6), random_state=0)
    >>> result.n_components, result.model.n_components
    (3, 3)
    """
    t_start = time.perf_counter()
    k_values = check_k_values(k_values)
    criterion = check_criterion(criterion)
    covariance_types = _check_covariance_types(covariance_types)
    template = _template(random_state, mixture_params)
    X = template._validate_X(X, fitting=True)
    w = _check_sample_weight(sample_weight, len(X))
    n_samples = float(len(X) if w is None else w.sum())
    rng = np.random.default_rng(random_state)
    rows, models, recorded, first_failure = [], {}, {}, None
    with single_threaded_blas():
        t = time.perf_counter()
        screen = _Screen(X, w, template, max(k_values), rng)
        info = {"trial_rows": len(screen.x), "seeding_seconds": time.perf_counter() - t}
        for ctype in covariance_types:
            previous = None
            for k in k_values:
                row, model, caught, error = _fit_row(X, w, k, ctype, template, screen, previous,
                                                     rng, n_samples)
                rows.append(row)
                recorded[(ctype, k)] = caught
                if model is not None:
                    models[(ctype, k)] = model
                elif first_failure is None:
                    first_failure = error
                previous = model
    fitted = [r for r in rows if r["error"] is None]
    if not fitted:
        kind = (TooFewDistinctRowsError
                if isinstance(first_failure, TooFewDistinctRowsError) else ValueError)
        raise kind(f"no K in {k_values} could be fitted: {rows[0]['error']}")
    best = _chosen_row(fitted, criterion, n_samples)
    info["seconds"] = time.perf_counter() - t_start
    return SelectKResult(
        rows=rows,
        criterion=criterion,
        n_components=best["n_components"],
        covariance_type=best["covariance_type"],
        model=models[(best["covariance_type"], best["n_components"])],
        n_samples=n_samples,
        models=models,
        info=info,
        _warnings=recorded,
    )


def _best_row(rows, criterion):
    """The fitted row with the lowest ``criterion``; the smallest K among equals."""
    return min((r for r in rows if r["error"] is None),
               key=lambda r: (r[criterion], r["n_components"]))


def _is_clear(rows, n_samples):
    """Whether ICL's choice among ``rows`` is a clear count.

    K >= 2 clusters are clear when the mean classification entropy per row
    is at most :data:`CLEAR_ENTROPY`.  One cluster has no boundary to be
    unsure about, so its entropy is 0 whatever the data; it is clear when
    BIC, too, finds no second component.
    """
    icl = _best_row(rows, "icl")
    if icl["n_components"] == 1:
        return _best_row(rows, "bic")["n_components"] == 1
    return icl["entropy"] / n_samples <= CLEAR_ENTROPY


def _chosen_row(rows, criterion, n_samples):
    """The row ``criterion`` chooses; "auto": ICL's if its count is clear, else BIC's."""
    if criterion == "auto":
        criterion = "icl" if _is_clear(rows, n_samples) else "bic"
    return _best_row(rows, criterion)


def _check_covariance_types(covariance_types):
    """A str or sequence of covariance types as a list, duplicates dropped."""
    expected = f"covariance_types must be a non-empty selection of {COVARIANCE_TYPES}"
    if isinstance(covariance_types, str):
        covariance_types = (covariance_types,)
    ctypes = list(dict.fromkeys(covariance_types))
    if not ctypes:
        raise ValueError(f"{expected}, got {covariance_types!r}")
    try:
        return [check_covariance_type(c) for c in ctypes]
    except ValueError as err:
        raise ValueError(f"{expected}, got {covariance_types!r}") from err


def _template(random_state, mixture_params):
    """The mixture every fit of the sweep copies its other parameters from, checked."""
    fixed = sorted(set(mixture_params) & set(_PER_FIT_PARAMS))
    if fixed:
        raise ValueError(f"select_k sets {', '.join(fixed)} for every fit itself; do not pass it")
    unknown = sorted(set(mixture_params) - set(GaussianMixture._param_names()))
    if unknown:
        raise ValueError(f"invalid parameter {unknown[0]!r} for GaussianMixture")
    template = GaussianMixture(random_state=random_state, **mixture_params)
    template._check_params()
    return template


def _fit_row(X, w, k, ctype, template, screen, previous, rng, n_samples):
    """One row of the sweep: fit K components, with criteria, time and warnings.

    Returns ``(row, model, caught warnings, error)``: ``model`` is None and
    ``error`` the exception when K could not be fitted, else ``error`` is None.
    """
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model, start = _fit_for_selection(X, w, k, ctype, template, screen, previous, rng)
            error = None
            log_lik, entropy = _log_likelihood_and_entropy(model, X, w)
        except ValueError as err:
            model, start, error, log_lik, entropy = None, None, err, None, None
    row = _selection_row(model, k, ctype, X.shape[1], n_samples, log_lik, entropy, start,
                         None if error is None else one_line(error))
    row["seconds"] = time.perf_counter() - t
    row["warnings"] = [f"{c.category.__name__}: {c.message}" for c in caught]
    return row, model, list(caught), error


def _selection_row(model, k, ctype, n_features, n_samples, log_lik, entropy, start, error):
    n_params = _n_parameters(ctype, k, n_features)
    row = {"n_components": k, "covariance_type": ctype, "n_parameters": n_params,
           "log_likelihood": None, "mean_log_likelihood": None, "bic": None, "aic": None,
           "entropy": None, "icl": None, "n_iter": None, "converged": None, "start": start,
           "error": error}
    if model is not None:
        bic = -2.0 * log_lik + n_params * math.log(n_samples)
        row.update(
            log_likelihood=log_lik,
            mean_log_likelihood=log_lik / n_samples,
            bic=bic,
            aic=-2.0 * log_lik + 2.0 * n_params,
            entropy=entropy,
            icl=bic + 2.0 * entropy,
            n_iter=int(model.n_iter_),
            converged=bool(model.converged_),
        )
    return row


def _log_likelihood_and_entropy(model, X, w, chunk=65536):
    """``sum_n w_n log p(x_n)`` and ``-sum_n w_n sum_k t_nk log t_nk``, float64.

    One E-step pass; the entropy is summed chunk by chunk (``0 log 0 = 0``).
    """
    result = model.e_step(X, labels=False)
    log_p = result.log_likelihood.astype(np.float64)
    row_entropy = np.empty(len(X))
    for start in range(0, len(X), chunk):
        t = result.proba[start:start + chunk].astype(np.float64)
        row_entropy[start:start + chunk] = -(t * np.log(np.maximum(t, _TINY))).sum(axis=1)
    if w is None:
        return float(log_p.sum()), float(row_entropy.sum())
    return float(log_p @ w), float(row_entropy @ w)


class _Screen:
    """The subsample and k-means++ seeds that the short runs of every K share.

    The subsample is `_trial_subsample`, as
    :meth:`GaussianMixture._screened_initialize` draws it.  With "k-means++" or "kmeans" initialisation, ``init_trials``
    k-means++ runs with the largest K are made once; K uses their first K
    centres.
    """

    def __init__(self, X, w, template, k_max, rng):
        self.X, self.w_all = X, w
        self.init_params = template.init_params
        self.n_trials = template.init_trials
        self.x, self.w = _trial_subsample(X, w, rng)
        self.seeds = []
        if self.init_params in ("k-means++", "kmeans"):
            k_seed = min(k_max, _n_distinct_rows(self.x, self.w))
            self.seeds = [_kmeans_plusplus(self.x, self.w, k_seed, rng)
                          for _ in range(self.n_trials)]

    def fresh_starts(self, k, covariance_type, reg_covar):
        """Rows and ``init_trials`` starts for K: ``(weights, means, covariances)``.

        A start is None where the model is to initialise itself (other
        ``init_params``, or K larger than the distinct rows of the subsample:
        then all rows are used, as ``_screened_initialize`` does).
        """
        if self.seeds and k <= len(self.seeds[0]):
            x, w = self.x, self.w
            starts = []
            for seed in self.seeds:
                if self.init_params == "kmeans":
                    _, labels = _lloyd(x, w, seed[:k])
                else:
                    labels, _ = _nearest(x, seed[:k])
                weights, means, cov_k, nk = _moments(
                    x, w, labels, k, covariance_type in ("diag", "spherical"))
                starts.append(
                    (weights, means, _finish_covariances(cov_k, nk, covariance_type, reg_covar)))
            return x, w, starts
        x, w = self.x, self.w
        if not _has_n_distinct_rows(x, w, k):
            x, w = self.X, self.w_all
        return x, w, [None] * self.n_trials


def _grown_starts(previous, x, w, rng, n_starts=_GROWN_TRIALS):
    """Starts with one more component than ``previous``, on badly explained rows.

    The fitted parameters are kept; the new component gets weight 1/K, the
    weight-averaged covariance, and as its mean the row with the lowest
    log-likelihood or rows drawn with probability proportional to their
    deficit ``max log p - log p`` (the likelihood analogue of k-means++).
    """
    k = previous.n_components + 1
    log_p = previous.score_samples(x).astype(np.float64)
    usable = np.ones(len(x), bool) if w is None else w > 0
    rows = [int(np.argmin(np.where(usable, log_p, np.inf)))]
    deficit = np.where(usable, log_p[usable].max() - log_p, 0.0)
    if w is not None:
        deficit *= w
    deficit[rows[0]] = 0.0
    n_draw = min(n_starts - 1, np.count_nonzero(deficit))
    if n_draw > 0:
        rows += rng.choice(len(x), size=n_draw, replace=False,
                           p=deficit / deficit.sum()).tolist()
    weights = np.append(previous.weights_ * (1.0 - 1.0 / k), 1.0 / k)
    covariances = previous.covariances_
    if previous.covariance_type != "tied":
        average = np.tensordot(previous.weights_, covariances, axes=1)
        covariances = np.concatenate([covariances, average[None]])
    return [(weights.copy(), np.vstack([previous.means_, x[r].astype(np.float64)]),
             covariances.copy()) for r in rows]


def _split_start(previous, x, w, n_splits=_SPLIT_TRIALS):
    """Starts with one of the most bimodal components of ``previous`` split in two.

    A component that covers two clusters is wide, and the rows it explains
    are bimodal along its principal axis: their kurtosis there is low (3
    for a Gaussian, 1.8 for a flat slab, towards 1 for two clusters apart).
    Adding a component at badly explained rows (the grown starts) does not
    undo such a merge; splitting it does.  Each of the ``n_splits``
    components of lowest kurtosis gives one start (:func:`_split`).
    """
    resp = previous.predict_proba(x).astype(np.float64)
    if w is not None:
        resp *= w[:, None]
    x64 = x.astype(np.float64)
    candidates = []
    for j in range(previous.n_components):
        r = resp[:, j]
        total = r.sum()
        if total <= 1.0:
            continue
        centred = x64 - previous.means_[j]
        variances, axes = np.linalg.eigh((centred * r[:, None]).T @ centred / total)
        if variances[-1] <= 0.0:
            continue
        z = centred @ axes[:, -1]
        kurtosis = (r @ z ** 4 / total) / (r @ z ** 2 / total) ** 2
        candidates.append((kurtosis, j, z > 0))
    candidates.sort(key=lambda c: c[0])
    return [start for _, j, side in candidates[:n_splits]
            for start in _split(previous, x64, resp, j, side)]


def _split(previous, x64, resp, j, side):
    """``previous`` with component ``j`` cut in two where ``side`` changes; ``[start]`` or ``[]``.

    Each half of the rows ``j`` explains best (``resp`` weighted) gives the
    weight, mean and covariance of one new component, so that EM starts
    from two tight components rather than from two copies of the wide one.
    The tails of the neighbours, which a wide component takes a share of,
    stay out.
    """
    mine = resp.argmax(axis=1) == j
    halves = [resp[:, j] * (mine & half) for half in (~side, side)]
    if min(r.sum() for r in halves) <= 1.0:
        return []
    (mean_a, cov_a), (mean_b, cov_b) = (_moments_of(x64, r, previous) for r in halves)
    share = halves[0].sum() / resp[:, j].sum()
    weights = np.append(previous.weights_, previous.weights_[j] * (1.0 - share))
    weights[j] *= share
    means = np.vstack([previous.means_, mean_b])
    means[j] = mean_a
    covariances = previous.covariances_.copy()
    if previous.covariance_type != "tied":
        covariances = np.concatenate([covariances, np.asarray(cov_b)[None]])
        covariances[j] = cov_a
    return [(weights, means, covariances)]


def _moments_of(x, r, model):
    """Mean and covariance (in ``model``'s covariance form) of rows weighted by ``r``."""
    total = r.sum()
    mean = r @ x / total
    centred = x - mean
    cov = (centred * r[:, None]).T @ centred / total
    cov[np.diag_indices_from(cov)] += model.reg_covar_
    if model.covariance_type == "diag":
        return mean, np.diag(cov).copy()
    if model.covariance_type == "spherical":
        return mean, np.diag(cov).mean()
    return mean, cov


def _fit_for_selection(X, w, k, ctype, template, screen, previous, rng):
    """Screen the starts of one K, run full EM from the best; ``(model, start kind)``."""
    if len(X) < k or not _has_n_distinct_rows(X, w, k):
        raise _too_few_distinct(k)
    params = template.get_params() | {"n_components": k, "covariance_type": ctype}
    x, xw, fresh = screen.fresh_starts(k, ctype, float(template.reg_covar))
    starts = [("fresh", s) for s in fresh]
    if previous is not None and previous.n_components == k - 1 and x is screen.x:
        starts += [("grown", s) for s in _grown_starts(previous, x, xw, rng)]
        starts += [("split", s) for s in _split_start(previous, x, xw)]
    jobs = [(params, x, xw, trial_rng, start)
            for (_, start), trial_rng in zip(starts, _trial_generators(rng, len(starts)))]
    screened, failure = [], None
    for (kind, _), result in zip(starts, _short_ems(jobs, params["n_jobs"] or available_cpus())):
        if isinstance(result, ValueError):
            failure = result
            continue
        lower_bound, state = result
        screened.append((-np.inf if np.isnan(lower_bound) else lower_bound, kind, state))
    if not screened:
        raise failure
    screened.sort(key=lambda s: s[0], reverse=True)  # stable: fresh starts win ties
    best = None
    for _, kind, state in screened[: params["n_init"]]:
        model = GaussianMixture(**(params | {
            "n_init": 1,
            "weights_init": state["weights_"],
            "means_init": state["means_"],
            "precisions_init": _precisions_from_cholesky(state["precisions_cholesky_"], ctype),
        }))
        model.fit(X, sample_weight=w)
        if best is None or model.lower_bound_ > best[0].lower_bound_:
            best = (model, kind)
    model, kind = best
    model.set_params(n_init=params["n_init"], weights_init=None, means_init=None,
                     precisions_init=None)
    return model, kind
