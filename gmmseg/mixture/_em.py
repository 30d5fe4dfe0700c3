"""The EM numerical core: streamed E-step kernels and the M-step, over arrays.

This module owns the per-row work of one EM iteration and how it is spread
over row chunks and threads.  It works on arrays and packed parameters only:
it knows no estimator, validates no user input and touches no files.

How the EM iteration is organised (the README's "Speed" section and
``scripts/bench_em.py`` give the measurements behind these choices):

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

import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

_LOG_2PI = math.log(2.0 * math.pi)
# Each chunk's (K * D, n) work arrays stay around this many floats (~2.5 MB in
# float32): small enough for the cache, big enough to amortise Python overhead.
_CHUNK_FLOATS = 640 * 1024


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



def _run_stats(X, w, runner, state, full_stats, resp=None):
    """Sufficient statistics of all rows of ``X``, summed over the runner's blocks.

    ``full_stats`` asks for ``(K, D, D)`` scatter matrices (full and tied
    covariances) rather than their diagonals.
    """
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


def _run_e_step(X, runner, state, n_components, *, labels=True, proba=True,
                log_likelihood=True, component_log_prob=False):
    """The E-step outputs asked for, over all rows of ``X``."""
    n = len(X)
    k = n_components
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


# --------------------------------------------------------------------------
# The M-step: new parameters from the whitened statistics (small arrays)
# --------------------------------------------------------------------------

def _m_step_moments(stats, means, c_full, diagonal):
    """Weights, means and per-component covariances from whitened statistics.

    Parameters
    ----------
    stats : _Stats
        Accumulated in the coordinates whitened by the current parameters.
    means : (K, D) ndarray
        The current means.
    c_full : (K, D, D) ndarray
        The current ``C_k`` (``covariance_k = C_k C_k^T``).
    diagonal : bool
        Diagonal statistics (diag and spherical covariances).

    Returns
    -------
    nk : (K,) ndarray
        Weighted responsibility totals, floored at a tiny positive value.
    means : (K, D) ndarray
    cov_k : (K, D, D) ndarray, or (K, D) when ``diagonal``
        About the new means, not yet regularised.
    weights : (K,) ndarray
    """
    eps = 10 * np.finfo(np.float64).eps
    nk = stats.nk + eps
    mean_y = stats.sum_y / nk[:, None]
    means = means + np.einsum("kij,kj->ki", c_full, mean_y)
    if diagonal:
        c_diag = np.diagonal(c_full, axis1=1, axis2=2)
        cov_k = c_diag ** 2 * (stats.sum_yy / nk[:, None] - mean_y ** 2)
    else:
        scatter = stats.sum_yy / nk[:, None, None] - mean_y[:, :, None] * mean_y[:, None, :]
        cov_k = np.matmul(np.matmul(c_full, scatter), np.swapaxes(c_full, 1, 2))
    cov_k = np.maximum(cov_k, 0.0) if cov_k.ndim == 2 else cov_k
    weights = nk / nk.sum()
    return nk, means, cov_k, weights


def _reseed_empty(empty, means, cov_k, weights, nk, X, log_lik):
    """Move the ``empty`` components onto the rows explained worst.

    Each gets a distinct row with the lowest log-likelihood ``log_lik`` as its
    mean, the responsibility-weighted average covariance of the others and
    weight ``1 / N``; the weights are renormalised.  Returns new
    ``(means, cov_k, weights)``.
    """
    idx = np.flatnonzero(empty)
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
    return means, cov_k, weights / weights.sum()
