"""Gaussian mixture models fitted by EM, vectorised and streamed over row chunks.

The maths lives in module-level functions of arrays; :class:`GaussianMixture`
only holds the fitted state and follows scikit-learn's names so that it can be
swapped in for ``sklearn.mixture.GaussianMixture``.

How the EM iteration is organised (see ``PERF_NOTES.md`` for the measurements
behind each choice):

* Every covariance type is carried internally as a full per-component
  precision Cholesky factor ``P_k`` (``precision_k = P_k P_k^T``) and its
  inverse transpose ``C_k`` (``covariance_k = C_k C_k^T``).  The E-step works
  in centred, whitened coordinates ``y = P_k^T (x - mu_k)``, where float32 is
  accurate because ``y`` is of order one for the points a component explains.
* The M-step sufficient statistics (``sum r``, ``sum r y``, ``sum r y y^T``)
  are accumulated in those same coordinates during the E-step pass, so one
  pass over the data does a whole EM iteration.  Chunk results are summed in
  float64.
* Rows are processed in cache-sized chunks, feature-major (``(D, n)``), spread
  over threads with BLAS pinned to one thread.  Memory is ``O(chunk * K * D)``
  beyond the input, never ``O(N * K * D)``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

from ._system import available_cpus
from .errors import ConvergenceWarning, ModelFileError, TooFewDistinctRowsError
from .io.writers import atomic_output

logger = logging.getLogger(__name__)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
CRITERIA = ("bic", "aic")
INIT_METHODS = ("k-means++", "kmeans", "random", "random_from_data")
FORMAT_NAME = "gmmseg.GaussianMixture"
FORMAT_VERSION = 1

_LOG_2PI = math.log(2.0 * math.pi)
# Each chunk's (K * D, n) work arrays stay around this many floats (~2.5 MB in
# float32): small enough for the cache, big enough to amortise Python overhead.
_CHUNK_FLOATS = 640 * 1024
# How many times a non positive definite covariance is retried with a ten
# times larger reg_covar before giving up.
_MAX_REG_RETRIES = 6
# "Small EM" initialisation: each trial runs this many EM iterations on at
# most this many rows (see GaussianMixture._screened_initialize).
_TRIAL_ROWS = 20_000
_TRIAL_ITER = 50
_FIT_FAILED_HINT = (
    "try fewer components, increase reg_covar, or scale the input data"
)


# --------------------------------------------------------------------------
# Parameter conversions (float64, small arrays)
# --------------------------------------------------------------------------

def _covariance_shape(covariance_type, n_components, n_features):
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def _as_full(arr, covariance_type, n_components, n_features):
    """Expand covariance-type-shaped parameters to ``(K, D, D)`` matrices."""
    arr = np.asarray(arr, dtype=np.float64)
    if covariance_type == "full":
        return arr.copy()
    if covariance_type == "tied":
        return np.broadcast_to(arr, (n_components, n_features, n_features)).copy()
    if covariance_type == "diag":
        out = np.zeros((n_components, n_features, n_features))
        idx = np.arange(n_features)
        out[:, idx, idx] = arr
        return out
    eye = np.eye(n_features)
    return arr[:, None, None] * eye


def _cholesky_factors(covariances, covariance_type):
    """Precision Cholesky factors of ``covariances``, sklearn's layout.

    Raises ``np.linalg.LinAlgError`` when a covariance is not positive definite.
    """
    if covariance_type in ("full", "tied"):
        covs = covariances[None] if covariance_type == "tied" else covariances
        d = covs.shape[-1]
        out = np.empty_like(covs)
        for k, cov in enumerate(covs):
            try:
                cov_chol = linalg.cholesky(cov, lower=True)
            except linalg.LinAlgError as err:
                raise np.linalg.LinAlgError(f"component {k}") from err
            out[k] = linalg.solve_triangular(cov_chol, np.eye(d), lower=True).T
        return out[0] if covariance_type == "tied" else out
    if np.any(covariances <= 0.0) or not np.all(np.isfinite(covariances)):
        bad = int(np.argwhere(~(covariances > 0.0)).ravel()[0]) if np.any(
            ~(covariances > 0.0)) else 0
        raise np.linalg.LinAlgError(f"component {bad}")
    return 1.0 / np.sqrt(covariances)


def _precisions_from_cholesky(prec_chol, covariance_type):
    if covariance_type == "full":
        return np.matmul(prec_chol, np.swapaxes(prec_chol, 1, 2))
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol ** 2


def _precision_cholesky_from_precisions(precisions, covariance_type):
    """sklearn's handling of ``precisions_init``: Cholesky of the precision."""
    precisions = np.asarray(precisions, dtype=np.float64)
    if covariance_type == "full":
        return np.array([linalg.cholesky(p, lower=True) for p in precisions])
    if covariance_type == "tied":
        return linalg.cholesky(precisions, lower=True)
    return np.sqrt(precisions)


def _covariances_from_precision_cholesky(prec_chol, covariance_type):
    if covariance_type in ("diag", "spherical"):
        return 1.0 / prec_chol ** 2
    precisions = _precisions_from_cholesky(prec_chol, covariance_type)
    return np.linalg.inv(precisions)


def _finish_covariances(cov_k, nk, covariance_type, reg_covar):
    """Reduce per-component covariances to ``covariance_type`` and regularise.

    ``cov_k`` is ``(K, D, D)`` for full/tied and the diagonal ``(K, D)`` for
    diag/spherical, each about the component's new mean.
    """
    if covariance_type == "full":
        d = cov_k.shape[-1]
        out = cov_k.copy()
        out[:, np.arange(d), np.arange(d)] += reg_covar
        return out
    if covariance_type == "tied":
        out = np.tensordot(nk, cov_k, axes=1) / nk.sum()
        out.flat[:: out.shape[0] + 1] += reg_covar
        return out
    if covariance_type == "diag":
        return cov_k + reg_covar
    return cov_k.mean(axis=1) + reg_covar


def _n_parameters(covariance_type, n_components, n_features):
    cov = {
        "full": n_components * n_features * (n_features + 1) / 2.0,
        "tied": n_features * (n_features + 1) / 2.0,
        "diag": n_components * n_features,
        "spherical": n_components,
    }[covariance_type]
    return int(cov + n_components * n_features + n_components - 1)


def canonical_order(means):
    """Order of components sorted by their means, first feature first.

    Parameters
    ----------
    means : (K, D) ndarray

    Returns
    -------
    order : (K,) ndarray of int
        ``means[order]`` is sorted by column 0, ties broken by column 1, ...

    Examples
    --------
    >>> canonical_order(np.array([[2.0, 0.0], [1.0, 5.0], [1.0, 3.0]]))
    array([2, 1, 0])
    """
    means = np.asarray(means)
    return np.lexsort(means.T[::-1])


# --------------------------------------------------------------------------
# The streamed E-step / sufficient-statistics kernels
# --------------------------------------------------------------------------

class _State(NamedTuple):
    """Current parameters packed for the chunk kernels (compute dtype)."""

    means: np.ndarray        # (K, D, 1)
    prec_chol_t: np.ndarray  # (K, D, D) P_k^T, or (K, D, 1) diagonal when diagonal
    log_const: np.ndarray    # (K, 1) log w_k + log det P_k - D/2 log 2 pi
    diagonal: bool


def _pack_state(weights, means, prec_chol_full, dtype, diagonal):
    k, d = means.shape
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    log_det = np.log(np.abs(np.diagonal(prec_chol_full, axis1=1, axis2=2))).sum(1)
    log_const = log_w + log_det - 0.5 * d * _LOG_2PI
    if diagonal:
        pt = np.diagonal(prec_chol_full, axis1=1, axis2=2)[:, :, None]
    else:
        pt = np.swapaxes(prec_chol_full, 1, 2)
    return _State(
        means=np.ascontiguousarray(means[:, :, None], dtype=dtype),
        prec_chol_t=np.ascontiguousarray(pt, dtype=dtype),
        log_const=np.ascontiguousarray(log_const[:, None], dtype=dtype),
        diagonal=diagonal,
    )


class _Workspace:
    """Per-thread scratch buffers, reused across chunks and EM iterations.

    Reusing them matters: freshly allocated multi-megabyte arrays are page
    faulted on every touch, which costs more than the arithmetic here.
    """

    def __init__(self, dtype):
        self.dtype = dtype
        self._flat = {}

    def get(self, name, shape):
        size = math.prod(shape)
        buf = self._flat.get(name)
        if buf is None or buf.size < size:
            buf = self._flat[name] = np.empty(size, dtype=self.dtype)
        return buf[:size].reshape(shape)


def _whiten(x, state, ws):
    """Whitened coordinates and weighted log densities of one chunk.

    Parameters
    ----------
    x : (n, D) ndarray
        The chunk, row-major; copied feature-major into the workspace.

    Returns
    -------
    y : (K, D, n) ndarray
        ``P_k^T (x - mu_k)`` for every component.
    y2 : (K, D, n) ndarray
        ``y ** 2``.
    log_prob : (K, n) ndarray
        ``log w_k + log N(x | mu_k, Sigma_k)``.
    """
    n, d = x.shape
    k = state.means.shape[0]
    xt = ws.get("xt", (d, n))
    xt[...] = x.T  # feature-major: sums over D and K become fast row operations
    centred = np.subtract(xt[None], state.means, out=ws.get("centred", (k, d, n)))
    if state.diagonal:
        y = np.multiply(centred, state.prec_chol_t, out=centred)
    else:
        y = np.matmul(state.prec_chol_t, centred, out=ws.get("y", (k, d, n)))
    y2 = np.square(y, out=ws.get("y2", (k, d, n)))
    log_prob = np.sum(y2, axis=1, out=ws.get("log_prob", (k, n)))
    log_prob *= -0.5
    log_prob += state.log_const
    return y, y2, log_prob


def _normalise_in_place(log_prob):
    """Turn ``(K, n)`` log probabilities into responsibilities, in place.

    Returns the per-row log normaliser ``log sum_k exp(log_prob)`` (n,).
    """
    top = log_prob.max(axis=0)
    log_prob -= top
    resp = np.exp(log_prob, out=log_prob)
    total = resp.sum(axis=0)
    resp /= total
    np.log(total, out=total)
    total += top
    return total


def _argmax_components(log_prob):
    """Row-wise argmax of a ``(K, n)`` array (numpy is slow on axis 0)."""
    best = log_prob[0].copy()
    labels = np.zeros(log_prob.shape[1], dtype=np.int32)
    for k in range(1, log_prob.shape[0]):
        better = log_prob[k] > best
        labels[better] = k
        np.maximum(best, log_prob[k], out=best)
    return labels


class _Stats(NamedTuple):
    log_lik: float        # sum_n w_n log p(x_n)
    nk: np.ndarray        # (K,) sum_n w_n r_nk
    sum_y: np.ndarray     # (K, D) sum_n w_n r_nk y_nk
    sum_yy: np.ndarray    # (K, D, D) or (K, D) when diagonal statistics suffice

    def __add__(self, other):
        return _Stats(*(a + b for a, b in zip(self, other)))


def _chunk_stats(x, w, state, full_stats, ws, resp=None):
    """Sufficient statistics of one chunk.

    With ``resp`` (K, n) given, those responsibilities are used instead of
    the posterior (an E-step done elsewhere, e.g. with a spatial prior); the
    returned log-likelihood is then that of the current parameters all the
    same.
    """
    y, y2, log_prob = _whiten(x, state, ws)
    log_norm = _normalise_in_place(log_prob)
    if resp is None:
        resp = log_prob
        if w is not None:
            resp *= w
    elif w is not None:
        resp = resp * w
    if w is None:
        log_lik = float(log_norm.sum(dtype=np.float64))
    else:
        log_lik = float(np.dot(log_norm.astype(np.float64), w.astype(np.float64)))
    rcol = resp[:, :, None]
    sum_y = np.matmul(y, rcol)[..., 0]
    if full_stats:
        weighted = np.multiply(y, resp[:, None, :], out=y2)  # y2 is not needed any more
        sum_yy = np.matmul(weighted, np.swapaxes(y, 1, 2))
    else:
        sum_yy = np.matmul(y2, rcol)[..., 0]
    return _Stats(
        log_lik,
        resp.sum(axis=1, dtype=np.float64),
        sum_y.astype(np.float64),
        sum_yy.astype(np.float64),
    )


def _chunk_e_step(x, state, sl, out, ws):
    """E-step of one chunk written into the caller's output arrays."""
    _, _, log_prob = _whiten(x, state, ws)
    if out.component_log_prob is not None:
        out.component_log_prob[:, sl] = log_prob
    if out.labels is not None:
        out.labels[sl] = _argmax_components(log_prob)
    if out.proba is None and out.log_likelihood is None:
        return
    log_norm = _normalise_in_place(log_prob)
    if out.proba is not None:
        out.proba[sl] = log_prob.T
    if out.log_likelihood is not None:
        out.log_likelihood[sl] = log_norm


class EStepResult(NamedTuple):
    """What :meth:`GaussianMixture.e_step` computed; ``None`` if not asked."""

    labels: np.ndarray | None          # (N,) int32
    proba: np.ndarray | None           # (N, K) float32 or float64
    log_likelihood: np.ndarray | None  # (N,) per-row log density
    component_log_prob: np.ndarray | None = None  # (K, N) log w_k + log N(x | k)


class _Runner:
    """Runs a chunk function over row blocks on a few threads, BLAS pinned.

    Each thread takes one contiguous block of rows and walks it chunk by
    chunk; per-thread results are combined by the caller.
    """

    def __init__(self, n_rows, chunk_rows, n_threads, dtype):
        self.chunk_rows = chunk_rows
        n_chunks = max(1, -(-n_rows // chunk_rows))
        n_threads = max(1, min(n_threads, n_chunks))
        per_thread = -(-n_chunks // n_threads) * chunk_rows
        self.blocks = [
            (s, min(s + per_thread, n_rows)) for s in range(0, n_rows, per_thread)
        ] or [(0, 0)]
        self._pool = ThreadPoolExecutor(len(self.blocks)) if len(self.blocks) > 1 else None
        self._workspaces = [_Workspace(dtype) for _ in self.blocks]
        self._limits = None

    def __enter__(self):
        self._limits = threadpool_limits(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown()
        self._limits.restore_original_limits()

    def map(self, block_fn):
        """``[block_fn(chunk_slices, workspace) for each thread block]``."""
        def work(i):
            start, stop = self.blocks[i]
            slices = [slice(s, min(s + self.chunk_rows, stop))
                      for s in range(start, stop, self.chunk_rows)]
            return block_fn(slices, self._workspaces[i])
        if self._pool is None:
            return [work(i) for i in range(len(self.blocks))]
        return list(self._pool.map(work, range(len(self.blocks))))


def _chunk_rows(n_components, n_features, chunk_size):
    if chunk_size is not None:
        return int(chunk_size)
    rows = _CHUNK_FLOATS // max(1, n_components * n_features)
    return int(min(65536, max(2048, rows // 256 * 256)))


# --------------------------------------------------------------------------
# Initialisation helpers (float64 moments, chunked)
# --------------------------------------------------------------------------

def _sq_distances(x, centers):
    """Squared Euclidean distances ``(n, K)`` of rows to centres."""
    x64 = x.astype(np.float64)
    d2 = (x64 ** 2).sum(1)[:, None] - 2.0 * x64 @ centers.T + (centers ** 2).sum(1)
    return np.maximum(d2, 0.0)


def _nearest(x, centers, chunk=65536):
    labels = np.empty(len(x), dtype=np.int32)
    dist = np.empty(len(x))
    for s in range(0, len(x), chunk):
        d2 = _sq_distances(x[s:s + chunk], centers)
        labels[s:s + chunk] = d2.argmin(1)
        dist[s:s + chunk] = d2[np.arange(len(d2)), labels[s:s + chunk]]
    return labels, dist


def _kmeans_plusplus(x, w, n_components, rng):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007), weighted by ``w``.

    Like scikit-learn's ``kmeans_plusplus``, each step draws ``2 + log K``
    candidates with probability proportional to their weighted squared
    distance to the nearest seed so far, and keeps the one that lowers the
    total potential most; plain k-means++ too often puts two seeds in one
    big cluster.
    """
    weight = np.ones(len(x)) if w is None else w
    first = rng.choice(len(x), p=weight / weight.sum())
    centers = [x[first].astype(np.float64)]
    _, closest = _nearest(x, np.array(centers))
    n_trials = 2 + int(math.log(n_components))
    for _ in range(1, n_components):
        score = closest * weight
        total = score.sum()
        if total <= 0.0:
            raise _too_few_distinct(n_components)
        candidates = rng.choice(len(x), size=n_trials, p=score / total)
        best = None
        for idx in candidates:
            _, dist = _nearest(x, x[idx:idx + 1].astype(np.float64))
            np.minimum(dist, closest, out=dist)
            potential = float(dist @ weight)
            if best is None or potential < best[0]:
                best = (potential, idx, dist)
        centers.append(x[best[1]].astype(np.float64))
        closest = best[2]
    return np.array(centers)


def _lloyd(x, w, centers, max_iter=20, tol=1e-4):
    """A few vectorised Lloyd iterations; returns centres and labels."""
    k = len(centers)
    w_ = np.ones(len(x)) if w is None else w
    scale = float(np.var(x[:: max(1, len(x) // 10000)], axis=0).mean()) or 1.0
    labels, _ = _nearest(x, centers)
    for _ in range(max_iter):
        counts = np.bincount(labels, weights=w_, minlength=k)
        sums = np.stack([np.bincount(labels, weights=w_ * x[:, j], minlength=k)
                         for j in range(x.shape[1])], axis=1)
        new = centers.copy()
        filled = counts > 0
        new[filled] = sums[filled] / counts[filled, None]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        labels, _ = _nearest(x, centers)
        if shift <= tol * scale:
            break
    return centers, labels


def _moments(x, w, resp_chunk, n_components, diagonal, chunk=65536):
    """Weights, means and covariances (about the means) from responsibilities.

    ``resp_chunk(sl)`` returns the ``(n, K)`` responsibilities of rows ``sl``.
    Two passes (means, then centred scatter) keep float64 accuracy.
    """
    n, d = x.shape
    nk = np.zeros(n_components)
    sums = np.zeros((n_components, d))
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        r = resp_chunk(sl)
        if w is not None:
            r = r * w[sl, None]
        nk += r.sum(0)
        sums += r.T @ x[sl].astype(np.float64)
    nk_safe = np.maximum(nk, 10 * np.finfo(np.float64).eps)
    means = sums / nk_safe[:, None]
    cov = np.zeros((n_components, d) if diagonal else (n_components, d, d))
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        r = resp_chunk(sl)
        if w is not None:
            r = r * w[sl, None]
        x64 = x[sl].astype(np.float64)
        for k in range(n_components):
            z = x64 - means[k]
            if diagonal:
                cov[k] += r[:, k] @ (z * z)
            else:
                cov[k] += (z * r[:, k:k + 1]).T @ z
    cov /= nk_safe[:, None] if diagonal else nk_safe[:, None, None]
    return nk / nk.sum(), means, cov, nk


def _one_hot(labels, n_components):
    def resp(sl):
        lab = labels[sl]
        r = np.zeros((len(lab), n_components))
        r[np.arange(len(lab)), lab] = 1.0
        return r
    return resp


def _too_few_distinct(n_components):
    return TooFewDistinctRowsError(
        f"X has fewer than n_components={n_components} distinct rows (with non-zero "
        "weight); use fewer components")


def _has_n_distinct_rows(x, w, n):
    """Whether ``x`` has at least ``n`` distinct rows with non-zero weight."""
    if w is not None:
        x = x[w > 0]
    if len(x) < n:
        return False
    for rows in (x[:4096], x):  # the first rows usually settle it cheaply
        view = np.ascontiguousarray(rows).view(
            np.dtype((np.void, rows.dtype.itemsize * rows.shape[1])))
        if len(np.unique(view)) >= n:
            return True
    return False


# --------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------

class GaussianMixture:
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
    dtype : {"float32", "float64"}, default="float32"
        Compute precision of the E-step.  Sums and log-likelihoods are always
        accumulated in float64.
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
    reg_covar_ : float
        The regularisation actually used (``reg_covar`` unless it had to grow).
    n_features_in_ : int

    Notes
    -----
    ``fit`` accepts ``sample_weight``: a row with weight ``c`` counts as ``c``
    identical rows.  This is what lets the segmentation pipeline fit on a
    random subsample of pixels, or on the unique pixel values with their
    counts, and still get the maximum-likelihood mixture of the whole image.

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
        dtype="float32",
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

    # ----- scikit-learn estimator protocol --------------------------------

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep=True):
        """Constructor parameters as a dict."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor parameters; unknown names raise ``ValueError``."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for GaussianMixture; "
                    f"valid parameters are {sorted(valid)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {
            p.name: p.default
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self"
        }
        changed = []
        for name, default in defaults.items():
            value = getattr(self, name)
            if isinstance(value, np.ndarray) or value is not default and value != default:
                changed.append(f"{name}={value!r}" if not isinstance(value, np.ndarray)
                               else f"{name}=array{value.shape}")
        return f"GaussianMixture({', '.join(changed)})"

    # ----- validation -----------------------------------------------------

    def _compute_dtype(self):
        try:
            dtype = np.dtype(self.dtype)
        except TypeError as err:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}") from err
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return dtype

    def _check_params(self):
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        positive_int("n_components")
        positive_int("max_iter", 0)
        positive_int("n_init")
        positive_int("init_trials")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}"
            )
        if self.init_params not in INIT_METHODS:
            raise ValueError(f"init_params must be one of {INIT_METHODS}, got {self.init_params!r}")
        for name in ("tol", "reg_covar"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.n_jobs is not None:
            positive_int("n_jobs")
        if self.chunk_size is not None:
            positive_int("chunk_size")
        self._compute_dtype()

    def _validate_X(self, X, *, fitting):
        if hasattr(X, "dtype") and X.dtype == object or isinstance(X, (str, bytes)):
            raise ValueError("X must be a numeric array of shape (n_samples, n_features)")
        try:
            X = np.asarray(X)
        except (TypeError, ValueError) as err:
            raise ValueError(f"X must be a numeric array: {err}") from err
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(
                f"X must be 2-D (n_samples, n_features), got an array of shape {X.shape}; "
                "use X.reshape(-1, 1) for a single feature"
            )
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X is empty: shape {X.shape}")
        X = np.ascontiguousarray(X, dtype=self._compute_dtype())
        # In row blocks: one (n_samples, n_features) bool array is as large as X.
        step = max(1, _CHUNK_FLOATS // X.shape[1])
        if not all(np.isfinite(X[r0:r0 + step]).all() for r0 in range(0, X.shape[0], step)):
            raise ValueError("X contains NaN or infinity; remove or impute those rows")
        if not fitting:
            self._check_fitted()
            if X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but the model was fitted with "
                    f"{self.n_features_in_}"
                )
        return X

    def _validate_weights(self, sample_weight, n):
        if sample_weight is None:
            return None
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("sample_weight must be finite and non-negative")
        if w.sum() <= 0:
            raise ValueError("sample_weight must have a positive sum")
        return w

    def _check_fitted(self):
        if not hasattr(self, "means_"):
            raise RuntimeError(
                "this GaussianMixture is not fitted yet; call fit(X) first"
            )

    def _check_init_arrays(self, n_features):
        k, d, ctype = self.n_components, n_features, self.covariance_type
        out = {}
        if self.weights_init is not None:
            w = np.asarray(self.weights_init, dtype=np.float64)
            if w.shape != (k,):
                raise ValueError(f"weights_init must have shape ({k},), got {w.shape}")
            if (w < 0).any() or not np.isclose(w.sum(), 1.0, atol=1e-6):
                raise ValueError("weights_init must be non-negative and sum to 1")
            out["weights"] = w
        if self.means_init is not None:
            m = np.asarray(self.means_init, dtype=np.float64)
            if m.shape != (k, d):
                raise ValueError(f"means_init must have shape ({k}, {d}), got {m.shape}")
            out["means"] = m
        if self.precisions_init is not None:
            p = np.asarray(self.precisions_init, dtype=np.float64)
            shape = _covariance_shape(ctype, k, d)
            if p.shape != shape:
                raise ValueError(
                    f"precisions_init must have shape {shape} for covariance_type="
                    f"{ctype!r}, got {p.shape}"
                )
            try:
                out["prec_chol"] = _precision_cholesky_from_precisions(p, ctype)
            except (linalg.LinAlgError, ValueError) as err:
                raise ValueError("precisions_init must be positive definite") from err
            if not np.all(np.isfinite(out["prec_chol"])) or (
                ctype in ("diag", "spherical") and np.any(p <= 0)
            ):
                raise ValueError("precisions_init must be positive definite")
        return out

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
                covariances = self._add_diagonal(covariances, new_reg - reg)
                reg = new_reg
        self.reg_covar_ = reg
        self.weights_ = weights
        self.means_ = means
        self.covariances_ = covariances
        self.precisions_cholesky_ = prec_chol

    def _add_diagonal(self, covariances, amount):
        covariances = covariances.copy()
        if self.covariance_type == "full":
            d = covariances.shape[-1]
            covariances[:, np.arange(d), np.arange(d)] += amount
        elif self.covariance_type == "tied":
            covariances.flat[:: covariances.shape[0] + 1] += amount
        else:
            covariances += amount
        return covariances

    def _full_factors(self):
        """``(P, C)`` as ``(K, D, D)``: precision Cholesky and its inverse transpose."""
        k, d = self.means_.shape
        ctype = self.covariance_type
        if ctype in ("diag", "spherical"):
            p = np.broadcast_to(self.precisions_cholesky_.reshape(k, -1), (k, d))
            p_full = _as_full(p, "diag", k, d)
            c_full = _as_full(1.0 / p, "diag", k, d)
            return p_full, c_full
        p_full = _as_full(self.precisions_cholesky_, ctype, k, d)
        c_full = np.swapaxes(np.linalg.inv(p_full), 1, 2)
        return p_full, c_full

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
        if "means" in given:
            labels, _ = _nearest(X, given["means"])
            resp = _one_hot(labels, k)
        elif self.init_params == "random":
            soft = rng.uniform(size=(len(X), k))
            soft /= soft.sum(1, keepdims=True)
            resp = lambda sl: soft[sl]  # noqa: E731
        else:
            if self.init_params == "random_from_data":
                p = None if w is None else w / w.sum()
                centers = X[rng.choice(len(X), size=k, replace=False, p=p)].astype(np.float64)
                labels, _ = _nearest(X, centers)
            else:
                centers = _kmeans_plusplus(X, w, k, rng)
                if self.init_params == "kmeans":
                    centers, labels = _lloyd(X, w, centers)
                else:
                    labels, _ = _nearest(X, centers)
            resp = _one_hot(labels, k)
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
        ctype = self.covariance_type
        eps = 10 * np.finfo(np.float64).eps
        nk = stats.nk + eps
        total = stats.nk.sum()
        _, c_full = self._full_factors()
        mean_y = stats.sum_y / nk[:, None]
        means = self.means_ + np.einsum("kij,kj->ki", c_full, mean_y)
        if ctype in ("diag", "spherical"):
            c_diag = np.diagonal(c_full, axis1=1, axis2=2)
            cov_k = c_diag ** 2 * (stats.sum_yy / nk[:, None] - mean_y ** 2)
        else:
            scatter = stats.sum_yy / nk[:, None, None] - mean_y[:, :, None] * mean_y[:, None, :]
            cov_k = np.matmul(np.matmul(c_full, scatter), np.swapaxes(c_full, 1, 2))
        cov_k = np.maximum(cov_k, 0.0) if cov_k.ndim == 2 else cov_k
        weights = nk / nk.sum()
        # A component with (almost) no responsibility left is re-seeded on the
        # rows the current model explains worst, rather than left to NaN.
        empty = stats.nk < 1e-3 * total / len(X)
        if empty.any():
            means, cov_k, weights = self._reseed(
                empty, means, cov_k, weights, nk, X, runner, state)
        covariances = _finish_covariances(cov_k, nk, ctype, self.reg_covar_)
        self._set_params_from_covariances(weights, means, covariances)

    def _reseed(self, empty, means, cov_k, weights, nk, X, runner, state):
        idx = np.flatnonzero(empty)
        log_lik = self._run_e_step(X, runner, state, labels=False, proba=False).log_likelihood
        order = np.argsort(log_lik, kind="stable")
        seeds = []
        for row in order:
            if len(seeds) == len(idx):
                break
            if all(np.any(X[row] != X[s]) for s in seeds):
                seeds.append(row)
        keep = ~empty
        avg_cov = np.tensordot(nk[keep], cov_k[keep], axes=1) / nk[keep].sum()
        means = means.copy()
        cov_k = cov_k.copy()
        weights = weights.copy()
        for k, row in zip(idx, seeds):
            means[k] = X[row]
            cov_k[k] = avg_cov
            weights[k] = 1.0 / len(X)
        logger.info("re-seeded empty component(s) %s on badly explained rows", idx.tolist())
        return means, cov_k, weights / weights.sum()

    def _run_stats(self, X, w, runner, state, resp=None):
        full_stats = self.covariance_type in ("full", "tied")
        wc = None if w is None else w.astype(X.dtype)

        def block(slices, ws):
            acc = None
            for sl in slices:
                s = _chunk_stats(X[sl], None if wc is None else wc[sl], state, full_stats, ws,
                                 None if resp is None else resp[:, sl])
                acc = s if acc is None else acc + s
            return acc

        parts = [p for p in runner.map(block) if p is not None]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total

    def _run_e_step(self, X, runner, state, *, labels=True, proba=True, log_likelihood=True,
                    component_log_prob=False):
        n = len(X)
        k = self.n_components
        out = EStepResult(
            np.empty(n, dtype=np.int32) if labels else None,
            np.empty((n, k), dtype=X.dtype) if proba else None,
            np.empty(n, dtype=X.dtype) if log_likelihood else None,
            np.empty((k, n), dtype=X.dtype) if component_log_prob else None,
        )

        def block(slices, ws):
            for sl in slices:
                _chunk_e_step(X[sl], state, sl, out, ws)

        runner.map(block)
        return out

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
            return self._run_e_step(
                X, runner, self._state(X.dtype), proba=False, log_likelihood=False
            ).labels

    def _fit(self, X, sample_weight):
        # Initialisation (seeding, moments) is thin matrix work too: BLAS
        # threads only add overhead and contention there, as in the EM passes.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit_pinned(X, sample_weight)

    def _fit_pinned(self, X, sample_weight):
        self._check_params()
        X = self._validate_X(X, fitting=True)
        n, d = X.shape
        k = self.n_components
        w = self._validate_weights(sample_weight, n)
        if n < k:
            raise TooFewDistinctRowsError(f"n_components={k} must be <= n_samples={n}")
        given = self._check_init_arrays(d)
        warm = self.warm_start and hasattr(self, "means_")
        if warm and self.means_.shape != (k, d):
            raise ValueError("warm_start needs the same n_components and n_features")
        if not warm and not {"weights", "means", "prec_chol"} <= given.keys():
            if not _has_n_distinct_rows(X, w, k):
                raise _too_few_distinct(k)
        rng = np.random.default_rng(self.random_state)
        n_init = 1 if warm else self.n_init
        self.n_features_in_ = d
        best = None
        for init in range(n_init):
            if not warm:
                self.reg_covar_ = float(self.reg_covar)
                if self.init_trials > 1 and "means" not in given:
                    self._screened_initialize(X, w, rng, given)
                else:
                    self._initialize(X, w, rng, given)
            lower_bound, n_iter, converged = self._em(X, w)
            if best is None or lower_bound > best[0]:
                best = (lower_bound, n_iter, converged, self._fitted_state())
            logger.debug("init %d: lower bound %.6f after %d iterations", init, lower_bound, n_iter)
        lower_bound, n_iter, converged, fitted = best
        self._restore_state(fitted)
        self.lower_bound_ = lower_bound
        self.n_iter_ = n_iter
        self.converged_ = converged
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
        costs about one EM iteration over all rows.
        """
        candidates = np.flatnonzero(w > 0) if w is not None else None
        n_rows = len(X) if candidates is None else len(candidates)
        if n_rows > _TRIAL_ROWS:
            pool = np.arange(len(X)) if candidates is None else candidates
            rows = np.sort(rng.choice(pool, size=_TRIAL_ROWS, replace=False))
            sub_x, sub_w = X[rows], None if w is None else w[rows]
            if not _has_n_distinct_rows(sub_x, sub_w, self.n_components):
                sub_x, sub_w = X, w  # a rare value the subsample missed
        else:
            sub_x, sub_w = X, w
        best = None
        for _ in range(self.init_trials):
            self.reg_covar_ = float(self.reg_covar)
            self._initialize(sub_x, sub_w, rng, given)
            lower_bound, _, _ = self._em(sub_x, sub_w, max_iter=min(_TRIAL_ITER, self.max_iter))
            if best is None or lower_bound > best[0]:
                best = (lower_bound, self._fitted_state())
        self._restore_state(best[1])

    def _em(self, X, w, max_iter=None):
        max_iter = self.max_iter if max_iter is None else max_iter
        lower_bound = -np.inf
        converged = False
        n_iter = 0
        total_weight = float(len(X) if w is None else w.sum())
        with self._runner(X) as runner:
            for n_iter in range(1, max_iter + 1):
                previous = lower_bound
                state = self._state(X.dtype)
                stats = self._run_stats(X, w, runner, state)
                lower_bound = stats.log_lik / total_weight
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
            (N,) in the model's compute dtype.
        """
        X = self._validate_X(X, fitting=False)
        with self._runner(X) as runner:
            return self._run_e_step(
                X, runner, self._state(X.dtype),
                labels=labels, proba=proba, log_likelihood=log_likelihood,
            )

    def component_log_prob(self, X):
        """``log w_k + log N(x_n | mu_k, Sigma_k)`` as a ``(K, N)`` array.

        Component-major, in the compute dtype: the unary term a spatial prior
        (:mod:`gmmseg.mrf`) combines with the neighbours' labels.
        """
        X = self._validate_X(X, fitting=False)
        with self._runner(X) as runner:
            return self._run_e_step(
                X, runner, self._state(X.dtype), labels=False, proba=False,
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
        w = self._validate_weights(sample_weight, len(X))
        with self._runner(X) as runner:
            state = self._state(X.dtype)
            stats = self._run_stats(X, w, runner, state, resp=resp)
            self._m_step(stats, X, w, runner, state)
        return self

    def predict(self, X):
        """Most probable component of each row, ``(N,)`` int32."""
        return self.e_step(X, proba=False, log_likelihood=False).labels

    def predict_proba(self, X):
        """Posterior probability of each component, ``(N, K)``; rows sum to 1."""
        return self.e_step(X, labels=False, log_likelihood=False).proba

    def score_samples(self, X):
        """Log density ``log p(x)`` of each row, ``(N,)``."""
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
                "reg_covar_": float(self.reg_covar_),
            },
        }

    _ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")

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
        self._check_fitted()
        path = Path(path)
        info = self._payload()
        info["metadata"] = metadata if metadata is not None else getattr(self, "metadata_", {})
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float64) for name in self._ARRAYS}
        header = json.dumps(info, sort_keys=True)
        checksum = _checksum(header, arrays)
        # atomic_output's temporaries are the ones batch --resume cleans up
        # after a killed run.
        with atomic_output(path, overwrite=True) as tmp:
            if path.suffix.lower() == ".json":
                doc = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                       "info": info, "checksum": checksum,
                       "arrays": {name: a.tolist() for name, a in arrays.items()}}
                tmp.write_text(json.dumps(doc, indent=1))
            else:
                with open(tmp, "wb") as fh:
                    np.savez(fh, format=np.array(FORMAT_NAME),
                             format_version=np.array(FORMAT_VERSION),
                             info=np.array(header), checksum=np.array(checksum), **arrays)

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`, checking it thoroughly.

        Raises
        ------
        ModelFileError
            The file is missing, not a gmmseg model, of an unknown format
            version, or its contents were altered or are inconsistent.
        """
        path = Path(path)

        def fail(problem):
            return ModelFileError(f"{path}: {problem}")

        try:
            if path.suffix.lower() == ".json":
                doc = json.loads(path.read_text())
                fmt, version = doc["format"], doc["format_version"]
                info, checksum = doc["info"], doc["checksum"]
                header = json.dumps(info, sort_keys=True)
                arrays = {n: np.asarray(doc["arrays"][n], dtype=np.float64) for n in cls._ARRAYS}
            else:
                with np.load(path, allow_pickle=False) as npz:
                    fmt = str(npz["format"])
                    version = int(npz["format_version"])
                    header = str(npz["info"])
                    checksum = str(npz["checksum"])
                    arrays = {n: np.asarray(npz[n], dtype=np.float64) for n in cls._ARRAYS}
                info = json.loads(header)
        except FileNotFoundError as err:
            raise fail("no such file") from err
        except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
            raise fail(f"not a readable gmmseg model file ({type(err).__name__}: {err})") from err
        if fmt != FORMAT_NAME:
            raise fail(f"not a gmmseg model file (format {fmt!r})")
        if version != FORMAT_VERSION:
            raise fail(f"model format version {version} is not supported "
                       f"(this gmmseg reads version {FORMAT_VERSION})")
        if checksum != _checksum(header, arrays):
            raise fail("checksum mismatch: the file was modified or corrupted")
        try:
            model = cls(**info["params"])
            model._check_params()
            model._restore_loaded(arrays, info)
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as err:
            raise fail(f"inconsistent model parameters: {err}") from err
        return model

    def _restore_loaded(self, arrays, info):
        weights, means = arrays["weights_"], arrays["means_"]
        if means.ndim != 2 or weights.shape != (means.shape[0],):
            raise ValueError("weights_/means_ shapes do not match")
        k, d = means.shape
        if k != self.n_components:
            raise ValueError("n_components does not match the arrays")
        shape = _covariance_shape(self.covariance_type, k, d)
        for name in ("covariances_", "precisions_cholesky_"):
            if arrays[name].shape != shape:
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected {shape}")
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise ValueError("non-finite values")
        if (weights < 0).any() or abs(weights.sum() - 1.0) > 1e-6:
            raise ValueError("weights_ must be non-negative and sum to 1")
        _cholesky_factors(arrays["covariances_"], self.covariance_type)  # PD check
        for name, value in arrays.items():
            setattr(self, name, value)
        for name, value in info["fitted"].items():
            setattr(self, name, value)
        self.n_features_in_ = d
        self.metadata_ = info.get("metadata") or {}


def _checksum(header, arrays):
    digest = hashlib.sha256(header.encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name], dtype="<f8").tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Model selection: one mixture per K (and covariance type), best by BIC / AIC
# --------------------------------------------------------------------------

# Extra screening starts for K grown from the fitted (K - 1)-component mixture.
_GROWN_TRIALS = 3
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
        weighted), ``mean_log_likelihood``, ``bic``, ``aic``, ``n_iter``,
        ``converged``, ``start`` (which screening start won: ``"fresh"``
        seeding or ``"grown"`` from the K - 1 fit), ``seconds``, ``warnings``
        (messages of the warnings the fit raised, recorded rather than
        re-raised) and ``error`` (why K could not be fitted, else None; the
        numbers are then None).
    criterion : {"bic", "aic"}
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
            ``k_values``, ``bic``, ``aic``, ``log_likelihood`` as lists of the
            same length; None where a K could not be fitted.
        """
        ctype = self.covariance_type if covariance_type is None else covariance_type
        rows = [r for r in self.rows if r["covariance_type"] == ctype]
        if not rows:
            raise ValueError(f"no fits with covariance_type={ctype!r}")
        return {
            "k_values": [r["n_components"] for r in rows],
            "bic": [r["bic"] for r in rows],
            "aic": [r["aic"] for r in rows],
            "log_likelihood": [r["log_likelihood"] for r in rows],
        }

    def summary(self):
        """The choice and the criterion curve(s), JSON-ready (for reports)."""
        n = self.n_samples
        out = {
            "criterion": self.criterion,
            "chosen": int(self.n_components),
            "covariance_type": self.covariance_type,
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
    """Fit a mixture for every K (and covariance type); keep the best by BIC or AIC.

    The criteria are computed on the rows given (with ``sample_weight``,
    weighted: ``n`` is the sum of the weights), so pass the same subsample
    the mixture would be fitted on.  Lower is better:
    ``BIC = -2 log L + p log n``, ``AIC = -2 log L + 2 p``.

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
    * BLAS is pinned to one thread for the whole sweep (the small matrix
      products of seeding are much slower multithreaded).

    Parameters
    ----------
    X : (N, D) array-like
    k_values : iterable of int
        Candidate numbers of components, each >= 1 (sorted, duplicates dropped).
    criterion : {"bic", "aic"}, default="bic"
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
    k_values = _check_k_values(k_values)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    covariance_types = _check_covariance_types(covariance_types)
    fixed = sorted(set(mixture_params) & set(_PER_FIT_PARAMS))
    if fixed:
        raise ValueError(f"select_k sets {', '.join(fixed)} for every fit itself; do not pass it")
    unknown = sorted(set(mixture_params) - set(GaussianMixture._param_names()))
    if unknown:
        raise ValueError(f"invalid parameter {unknown[0]!r} for GaussianMixture")
    template = GaussianMixture(random_state=random_state, **mixture_params)
    template._check_params()
    X = template._validate_X(X, fitting=True)
    w = template._validate_weights(sample_weight, len(X))
    n_samples = float(len(X) if w is None else w.sum())
    rng = np.random.default_rng(random_state)
    rows, models, recorded, failures = [], {}, {}, {}
    with threadpool_limits(limits=1, user_api="blas"):
        t = time.perf_counter()
        screen = _Screen(X, w, template, max(k_values), rng)
        info = {"trial_rows": len(screen.x), "seeding_seconds": time.perf_counter() - t}
        for ctype in covariance_types:
            previous = None
            for k in k_values:
                t = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        model, start = _fit_for_selection(X, w, k, ctype, template, screen,
                                                          previous, rng)
                        error = None
                        log_lik = _total_log_likelihood(model, X, w)
                    except ValueError as err:
                        model, start, error = None, None, " ".join(str(err).split())
                        failures.setdefault("first", err)
                row = _selection_row(model, k, ctype, X.shape[1], n_samples, log_lik
                                     if model is not None else None, start, error)
                row["seconds"] = time.perf_counter() - t
                row["warnings"] = [f"{c.category.__name__}: {c.message}" for c in caught]
                rows.append(row)
                recorded[(ctype, k)] = list(caught)
                if model is not None:
                    models[(ctype, k)] = model
                previous = model
    fitted = [r for r in rows if r["error"] is None]
    if not fitted:
        kind = (TooFewDistinctRowsError
                if isinstance(failures["first"], TooFewDistinctRowsError) else ValueError)
        raise kind(f"no K in {k_values} could be fitted: {rows[0]['error']}")
    best = min(fitted, key=lambda r: (r[criterion], r["n_components"]))
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


def _check_k_values(k_values):
    expected = "k_values must be a non-empty iterable of integers >= 1"
    try:
        values = sorted(set(k_values))
    except TypeError as err:
        raise ValueError(f"{expected}, got {k_values!r}") from err
    if not values or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1
            for k in values):
        raise ValueError(f"{expected}, got {k_values!r}")
    return [int(k) for k in values]


def _check_covariance_types(covariance_types):
    if isinstance(covariance_types, str):
        covariance_types = (covariance_types,)
    ctypes = list(dict.fromkeys(covariance_types))
    if not ctypes or any(c not in COVARIANCE_TYPES for c in ctypes):
        raise ValueError(
            f"covariance_types must be a non-empty selection of {COVARIANCE_TYPES}, "
            f"got {covariance_types!r}")
    return ctypes


def _selection_row(model, k, ctype, n_features, n_samples, log_lik, start, error):
    n_params = _n_parameters(ctype, k, n_features)
    row = {"n_components": k, "covariance_type": ctype, "n_parameters": n_params,
           "log_likelihood": None, "mean_log_likelihood": None, "bic": None, "aic": None,
           "n_iter": None, "converged": None, "start": start, "error": error}
    if model is not None:
        row.update(
            log_likelihood=log_lik,
            mean_log_likelihood=log_lik / n_samples,
            bic=-2.0 * log_lik + n_params * math.log(n_samples),
            aic=-2.0 * log_lik + 2.0 * n_params,
            n_iter=int(model.n_iter_),
            converged=bool(model.converged_),
        )
    return row


def _total_log_likelihood(model, X, w):
    """``sum_n w_n log p(x_n)`` at the fitted parameters, float64."""
    log_p = model.score_samples(X).astype(np.float64)
    return float(log_p.sum() if w is None else log_p @ w)


def _n_distinct_rows(x, w):
    if w is not None:
        x = x[w > 0]
    view = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1])))
    return len(np.unique(view))


class _Screen:
    """The subsample and k-means++ seeds that the short runs of every K share.

    The subsample is drawn as :meth:`GaussianMixture._screened_initialize`
    draws it.  With "k-means++" or "kmeans" initialisation, ``init_trials``
    k-means++ runs with the largest K are made once; K uses their first K
    centres.
    """

    def __init__(self, X, w, template, k_max, rng):
        self.X, self.w_all = X, w
        self.init_params = template.init_params
        self.n_trials = template.init_trials
        candidates = np.flatnonzero(w > 0) if w is not None else None
        n_rows = len(X) if candidates is None else len(candidates)
        if n_rows > _TRIAL_ROWS:
            pool = np.arange(len(X)) if candidates is None else candidates
            rows = np.sort(rng.choice(pool, size=_TRIAL_ROWS, replace=False))
            self.x, self.w = X[rows], None if w is None else w[rows]
        else:
            self.x, self.w = X, w
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
                    x, w, _one_hot(labels, k), k, covariance_type in ("diag", "spherical"))
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


def _short_em(params, x, w, rng, start):
    """One "small EM" trial: a start, then at most 50 EM iterations on ``x``."""
    model = GaussianMixture(**params)
    model.n_features_in_ = x.shape[1]
    model.reg_covar_ = float(model.reg_covar)
    if start is None:
        model._initialize(x, w, rng, {})
    else:
        model._set_params_from_covariances(*start)
    lower_bound, _, _ = model._em(x, w, max_iter=min(_TRIAL_ITER, model.max_iter))
    return lower_bound, model._fitted_state()


def _fit_for_selection(X, w, k, ctype, template, screen, previous, rng):
    """Screen the starts of one K, run full EM from the best; ``(model, start kind)``."""
    if len(X) < k or not _has_n_distinct_rows(X, w, k):
        raise _too_few_distinct(k)
    params = template.get_params() | {"n_components": k, "covariance_type": ctype}
    x, xw, fresh = screen.fresh_starts(k, ctype, float(template.reg_covar))
    starts = [("fresh", s) for s in fresh]
    if previous is not None and previous.n_components == k - 1 and x is screen.x:
        starts += [("grown", s) for s in _grown_starts(previous, x, xw, rng)]
    screened, failure = [], None
    for kind, start in starts:
        try:
            lower_bound, state = _short_em(params, x, xw, rng, start)
        except ValueError as err:
            failure = err
            continue
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


def check_n_components(value, name="n_components"):  # TEMP shim
    import numbers as _n
    if isinstance(value, bool) or not isinstance(value, _n.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)
