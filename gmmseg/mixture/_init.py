"""Where EM starts: seeding, first responsibilities and their moments.

This module owns the initialisation of a mixture from data: k-means++ and
Lloyd seeding, nearest-centre labels, the first responsibilities for each
``init_params``, weighted moments (float64, chunked), the checks that the data
has enough distinct rows for K components, and the subsample the "small EM"
start-up trials run on.  Functions of arrays and a random generator only: the
estimator decides which start to use; nothing here runs EM or touches files.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import TooFewDistinctRowsError

# "Small EM" initialisation: each trial runs this many EM iterations on at
# most this many rows (see GaussianMixture._screened_initialize).
_TRIAL_ROWS = 20_000
_TRIAL_ITER = 50


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
    x64 = x.astype(np.float64)
    x_sq = np.einsum("nd,nd->n", x64, x64)
    first = rng.choice(len(x), p=weight / weight.sum())
    centers = [x64[first]]
    closest = _distances_to(x64, x_sq, x64[first:first + 1])[:, 0]
    n_trials = 2 + int(math.log(n_components))
    for _ in range(1, n_components):
        score = closest * weight
        total = score.sum()
        if total <= 0.0:
            raise _too_few_distinct(n_components)
        candidates = rng.choice(len(x), size=n_trials, p=score / total)
        # All candidates at once: one (n, D) x (D, trials) product.
        dist = np.minimum(_distances_to(x64, x_sq, x64[candidates]), closest[:, None])
        best = int(np.argmin(weight @ dist))  # the first of equals, as one by one
        centers.append(x64[candidates[best]])
        closest = np.ascontiguousarray(dist[:, best])
    return np.array(centers)


def _distances_to(x64, x_sq, centers):
    """Squared distances ``(n, C)`` of float64 rows (norms ``x_sq``) to centres."""
    d2 = x64 @ centers.T
    d2 *= -2.0
    d2 += x_sq[:, None]
    d2 += np.einsum("cd,cd->c", centers, centers)
    return np.maximum(d2, 0.0, out=d2)


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



def _n_distinct_rows(x, w):
    """How many distinct rows ``x`` has with non-zero weight."""
    if w is not None:
        x = x[w > 0]
    view = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1])))
    return len(np.unique(view))


def _trial_subsample(X, w, rng):
    """The rows the "small EM" trials run on, and their weights.

    At most ``_TRIAL_ROWS`` random rows with non-zero weight, in their order;
    ``X, w`` themselves when they have no more rows than that.
    """
    candidates = np.flatnonzero(w > 0) if w is not None else None
    n_rows = len(X) if candidates is None else len(candidates)
    if n_rows <= _TRIAL_ROWS:
        return X, w
    pool = np.arange(len(X)) if candidates is None else candidates
    rows = np.sort(rng.choice(pool, size=_TRIAL_ROWS, replace=False))
    return X[rows], None if w is None else w[rows]


def _initial_responsibilities(X, w, rng, n_components, init_params, means=None):
    """The responsibilities EM starts from, as a ``resp_chunk`` function for `_moments`.

    Every row goes to its nearest given mean when ``means`` is given; else
    ``init_params`` decides (see :class:`GaussianMixture`).
    """
    k = n_components
    if means is not None:
        labels, _ = _nearest(X, means)
        return _one_hot(labels, k)
    if init_params == "random":
        soft = rng.uniform(size=(len(X), k))
        soft /= soft.sum(1, keepdims=True)
        return lambda sl: soft[sl]
    if init_params == "random_from_data":
        p = None if w is None else w / w.sum()
        centers = X[rng.choice(len(X), size=k, replace=False, p=p)].astype(np.float64)
        labels, _ = _nearest(X, centers)
    else:
        centers = _kmeans_plusplus(X, w, k, rng)
        if init_params == "kmeans":
            centers, labels = _lloyd(X, w, centers)
        else:
            labels, _ = _nearest(X, centers)
    return _one_hot(labels, k)
