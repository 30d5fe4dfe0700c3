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

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import cv2
import numpy as np

from .._system import compiled_kernels_wanted, import_compiled, single_threaded_blas
from ._parameters import _upper_mask

_LOG_2PI = math.log(2.0 * math.pi)
# The kernels carry y / sqrt(2) rather than y, so that the log density is
# ``log_const - sum(y'^2)`` without a pass multiplying by -1/2.
_SQRT_HALF = math.sqrt(0.5)
# Each chunk's ((D + 1) * K, n) work arrays stay around this many floats (~390 KB
# in float32): the matrix product writing them runs twice as fast as at twice
# the size (measured: output blocks above ~400 KB fall out of the fast cache
# path), and a chunk is still big enough that its arithmetic outweighs the ~20
# NumPy calls it makes.
_CHUNK_FLOATS = 96 * 1024
# Log responsibilities more than this far below the row's best are clamped
# before ``exp``.  Without the clamp 1-5 % of float32 responsibilities of a
# photo are subnormal numbers, and every product with them runs many times
# slower on some CPUs (the (r y) y^T product 4x slower at K = 8).  e^-60 is
# 9e-27: far below float32's resolution (6e-8) of the responsibilities that
# matter, yet far above the smallest normal float32 (1.2e-38), so the
# responsibilities, their products with y and y^2, and every statistic are
# unchanged to the last float32 (or float64) digit that counts.
_LOG_RESP_FLOOR = -60.0
# The fused kernels of `_kernels` when Numba is installed (the ``fast``
# extra), unless GMMSEG_KERNELS=numpy asks for the NumPy kernels below: 6-11x
# faster per EM iteration (README "Speed"), same statistics.
USE_COMPILED = compiled_kernels_wanted()


@functools.cache
def _compiled():
    """The `_kernels` module, imported on first use (Numba's import takes ~0.25 s);
    None where Numba fails to load."""
    return import_compiled(__package__, "_kernels")


def _use_compiled():
    """Whether this call runs the compiled kernels (wanted, and Numba loads)."""
    return USE_COMPILED and _compiled() is not None


class _State(NamedTuple):
    """Current parameters packed for the chunk kernels (compute dtype)."""

    # ((D + 1) * K, D + 1): for component k, sqrt(1/2) [P_k^T | -P_k^T mu_k]
    # over a last row (0, ..., 0, 1), its rows interleaved coordinate-major
    # (row d * K + k), so that one matrix product with the feature-major rows
    # [x; 1] gives every component's centred, whitened coordinates y_k / sqrt(2)
    # and a row of ones as a (D + 1, K, n) array: no centring pass; the row of
    # ones makes one product per component give sum r, sum r y and sum r y y^T;
    # and weighting by the (K, n) responsibilities broadcasts over the leading
    # axis, a contiguous inner loop (2.3x faster than over (K, D + 1, n)).
    affine: np.ndarray
    log_const: np.ndarray    # (K, 1) log w_k + log det P_k - D/2 log 2 pi
    diagonal: bool
    # The same affine map for the compiled kernels (`_kernels`):
    # y_k / sqrt(2) = whiten[k] @ x + shift[k].
    whiten: np.ndarray       # (K, D, D) sqrt(1/2) P_k^T
    shift: np.ndarray        # (K, D) -sqrt(1/2) P_k^T mu_k
    triangular: bool         # every P_k^T lower triangular (the kernels skip the zeros)


def _pack_state(weights, means, prec_chol_full, dtype, diagonal):
    k, d = means.shape
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    log_det = np.log(np.abs(np.diagonal(prec_chol_full, axis1=1, axis2=2))).sum(1)
    log_const = log_w + log_det - 0.5 * d * _LOG_2PI
    pt = np.swapaxes(prec_chol_full, 1, 2)
    affine = np.zeros((k, d + 1, d + 1))
    affine[:, :d, :d] = pt
    affine[:, :d, d] = -np.einsum("kij,kj->ki", pt, means)
    affine *= _SQRT_HALF
    affine[:, d, d] = 1.0
    whiten = np.ascontiguousarray(affine[:, :d, :d], dtype=dtype)
    shift = np.ascontiguousarray(affine[:, :d, d], dtype=dtype)
    affine = np.swapaxes(affine, 0, 1)  # coordinate-major rows, see _State
    return _State(
        affine=np.ascontiguousarray(affine.reshape((d + 1) * k, d + 1), dtype=dtype),
        log_const=np.ascontiguousarray(log_const[:, None], dtype=dtype),
        diagonal=diagonal,
        whiten=whiten,
        shift=shift,
        # lower triangular: nothing left outside the mask's transpose
        triangular=np.array_equal(pt, pt * _upper_mask(d).T),
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


def _augment(x, out=None):
    """``[x^T; 1]``, ``(D + 1, n)``: the feature-major rows `_State.affine` multiplies.

    Feature-major, because the matrix product then reads contiguous rows
    (twice as fast as through ``x.T``).  OpenCV transposes about four times
    faster than NumPy's strided copy.
    """
    n, d = x.shape
    if out is None:
        out = np.empty((d + 1, n), dtype=x.dtype)
    rows = out[:d]
    if n and cv2.transpose(np.ascontiguousarray(x), rows) is not rows:
        rows[...] = x.T  # never expected: OpenCV wrote elsewhere
    out[d] = 1.0
    return out


def _whiten(xa, state, ws):
    """Whitened coordinates and weighted log densities of one chunk.

    Parameters
    ----------
    xa : (D + 1, n) ndarray
        The chunk's rows, feature-major, over a row of ones (`_augment`).

    Returns
    -------
    y : (D + 1, K, n) ndarray
        ``P_k^T (x - mu_k) / sqrt(2)`` for every component, over a row of ones.
    log_prob : (K, n) ndarray
        ``log w_k + log N(x | mu_k, Sigma_k)``.
    """
    d1, n = xa.shape
    k = state.log_const.shape[0]
    y = np.matmul(state.affine, xa, out=ws.get("y", (d1 * k, n))).reshape(d1, k, n)
    yd = y[:-1]
    out = ws.get("log_prob", (k, n))
    if state.diagonal:
        # The diagonal statistics need y ** 2 anyway (`_chunk_stats`): summing
        # its rows is cheaper than einsum's multiply-and-sum.
        y2 = np.square(yd, out=ws.get("y2", yd.shape))
        log_prob = np.add.reduce(y2, axis=0, out=out)
    else:
        # einsum multiplies and sums over D in one pass, without writing y ** 2
        log_prob = np.einsum("dkn,dkn->kn", yd, yd, out=out)
    np.subtract(state.log_const, log_prob, out=log_prob)
    return y, log_prob


def _normalise_in_place(log_prob, ws):
    """Turn ``(K, n)`` log probabilities into responsibilities, in place.

    Returns ``(top, total)``, both ``(n,)``: the per-row log normaliser
    ``log sum_k exp(log_prob)`` is ``top + log(total)``.
    """
    n = log_prob.shape[1]
    top = np.max(log_prob, axis=0, out=ws.get("top", (n,)))
    log_prob -= top
    cv2.max(log_prob, _LOG_RESP_FLOOR, log_prob)  # see _LOG_RESP_FLOOR; 2x np.maximum
    resp = cv2.exp(log_prob, log_prob)  # twice np.exp's speed, same accuracy
    total = np.sum(resp, axis=0, out=ws.get("total", (n,)))
    inv = np.divide(1.0, total, out=ws.get("inv", (n,)))
    resp *= inv
    return top, total


def _log_normaliser(top, total):
    """``top + log(total)``, in place in ``total``."""
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


def _chunk_stats(xa, w, state, full_stats, ws, resp=None):
    """Sufficient statistics of one chunk of augmented rows (`_augment`).

    With ``resp`` (K, n) given, those responsibilities are used instead of
    the posterior (an E-step done elsewhere, e.g. with a spatial prior); the
    returned log-likelihood is then that of the current parameters all the
    same.  ``y`` is carried divided by sqrt(2): the sums are scaled back here.
    """
    y, log_prob = _whiten(xa, state, ws)
    top, total = _normalise_in_place(log_prob, ws)
    log_norm = _log_normaliser(top, total)
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
    # y's last row is ones: [y; 1] r gives sum r y and sum r together, and
    # (r [y; 1]) [y; 1]^T gives sum r y y^T as well: one product per component.
    # Per component (K, D + 1, n) views of the (D + 1, K, n) arrays: strided
    # rows, which the matrix products read directly.
    if full_stats:
        weighted = np.multiply(y, resp, out=ws.get("ry", y.shape))
        moments = np.matmul(weighted.transpose(1, 0, 2), y.transpose(1, 2, 0))
        moments = moments.astype(np.float64)
        sum_yy = moments[:, :-1, :-1]
    else:
        moments = np.matmul(y.transpose(1, 0, 2), resp[:, :, None]).astype(np.float64)
        yd = y[:-1]
        y2 = ws.get("y2", yd.shape)
        if not state.diagonal:  # else _whiten left y ** 2 there
            np.square(yd, out=y2)
        sum_yy = np.matmul(y2.transpose(1, 0, 2), resp[:, :, None])[..., 0].astype(np.float64)
    return _Stats(
        log_lik,
        moments[:, -1, -1],
        moments[:, :-1, -1] / _SQRT_HALF,
        sum_yy * 2.0,
    )


def _chunk_e_step(xa, state, sl, out, ws):
    """E-step of one chunk of augmented rows written into the caller's output arrays."""
    _, log_prob = _whiten(xa, state, ws)
    if out.component_log_prob is not None:
        out.component_log_prob[:, sl] = log_prob
    if out.labels is not None:
        out.labels[sl] = _argmax_components(log_prob)
    if out.proba is None and out.log_likelihood is None:
        return
    top, total = _normalise_in_place(log_prob, ws)
    if out.proba is not None:
        out.proba[sl] = log_prob.T
    if out.log_likelihood is not None:
        out.log_likelihood[sl] = _log_normaliser(top, total)


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
        self._limits = single_threaded_blas()
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
    rows = _CHUNK_FLOATS // max(1, n_components * (n_features + 1))
    return int(min(65536, max(1024, rows // 256 * 256)))


def _augmented_for_passes(X):
    """``_augment(X)`` for a loop of passes over ``X``, or ``None`` if none is needed.

    The NumPy kernels read feature-major chunks, so the EM loop transposes
    ``X`` once for all its passes; the compiled kernels read ``X`` as it is.
    """
    return None if _use_compiled() else _augment(X)


def _kernel_args(X, state):
    """``X`` as the compiled kernels take it, and the state's arguments after the rows."""
    return (np.ascontiguousarray(X),
            (state.whiten, state.shift, state.log_const[:, 0], state.triangular, state.diagonal))


def _chunk_rows_of(X, augmented, sl, ws):
    """Rows ``sl`` as ``[x^T; 1]``: a view of ``augmented`` or a copy in ``ws``."""
    if augmented is not None:
        return augmented[:, sl]
    x = X[sl]
    return _augment(x, ws.get("xa", (x.shape[1] + 1, len(x))))


def _run_stats(X, w, runner, state, full_stats, resp=None, augmented=None):
    """Sufficient statistics of all rows of ``X``, summed over the runner's blocks.

    ``full_stats`` asks for ``(K, D, D)`` scatter matrices (full and tied
    covariances) rather than their diagonals.  ``augmented``, ``_augment(X)``
    made once, spares a copy of every chunk when ``X`` is passed over many
    times (the EM loop).
    """
    wc = None if w is None else w.astype(X.dtype)
    if resp is None and _use_compiled():
        return _run_stats_compiled(X, wc, runner, state, full_stats)

    def block(slices, ws):
        acc = None
        for sl in slices:
            s = _chunk_stats(_chunk_rows_of(X, augmented, sl, ws),
                             None if wc is None else wc[sl], state, full_stats, ws,
                             None if resp is None else resp[:, sl])
            acc = s if acc is None else acc + s
        return acc

    parts = [p for p in runner.map(block) if p is not None]
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def _run_stats_compiled(X, w, runner, state, full_stats):
    """`_run_stats` by the compiled kernel: one call per thread block."""
    parts = runner.map(lambda slices, ws: _compiled_stats(
        X, w, slice(slices[0].start, slices[-1].stop), state, full_stats))
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return _Stats(float(total.log_lik[0]), *total[1:])


def _compiled_stats(X, w, rows, state, full_stats, group=None):
    """Sufficient statistics of ``X[rows]`` by the compiled kernel, as `_Stats`.

    ``group``: the state's components are models of this many components
    each, side by side (`_kernels.stats`); ``log_lik`` is an array, one
    entry per model (one model by default).
    """
    X, args = _kernel_args(X, state)
    w = np.empty(0, X.dtype) if w is None else np.ascontiguousarray(w, dtype=X.dtype)
    k, d = state.shift.shape
    group = group or k
    nk, sum_y, sum_yy = np.zeros(k), np.zeros((k, d)), np.zeros((k, d, d))
    log_lik = np.zeros(k // group)
    _compiled().stats(X, w, rows.start, rows.stop, *args, full_stats, group,
                      nk, sum_y, sum_yy, log_lik)
    if not full_stats:
        sum_yy = np.diagonal(sum_yy, axis1=1, axis2=2)
    return _Stats(log_lik, nk, sum_y / _SQRT_HALF, sum_yy * 2.0)


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
    if not component_log_prob and _use_compiled():
        Xc, args = _kernel_args(X, state)
        # Outputs not asked for go as empty arrays (the kernel skips them).
        outputs = (np.empty(0, np.int32) if out.labels is None else out.labels,
                   np.empty((0, k), X.dtype) if out.proba is None else out.proba,
                   np.empty(0, X.dtype) if out.log_likelihood is None else out.log_likelihood)
        e_step = _compiled().e_step
        runner.map(lambda slices, ws: e_step(
            Xc, slices[0].start, slices[-1].stop, *args, *outputs))
        return out

    def block(slices, ws):
        for sl in slices:
            _chunk_e_step(_chunk_rows_of(X, None, sl, ws), state, sl, out, ws)

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


def _emptied(nk, n_rows):
    """Which components have (almost) no responsibility left: ``nk`` ``(..., K)``
    responsibility totals of models fitted on ``n_rows`` rows."""
    return nk < 1e-3 * nk.sum(axis=-1, keepdims=True) / n_rows


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
