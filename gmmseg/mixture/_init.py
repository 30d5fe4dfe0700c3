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
# Responsibility totals are floored here before dividing (an empty component).
_NK_FLOOR = 10 * np.finfo(np.float64).eps


def _feature_major(x):
    """``x`` as float64 columns ``(D, n)`` and the rows' squared norms ``(n,)``.

    Feature-major, so that every pass below runs over the long axis (NumPy's
    loops over a short last axis are several times slower).
    """
    xt = np.ascontiguousarray(x.T, dtype=np.float64)
    return xt, np.add.reduce(xt * xt, axis=0)


def _distances_to(xt, x_sq, centers):
    """Squared distances ``(C, n)`` of the columns of ``xt`` (norms ``x_sq``) to centres."""
    d2 = centers @ xt
    d2 *= -2.0
    d2 += x_sq
    d2 += np.einsum("cd,cd->c", centers, centers)[:, None]
    return np.maximum(d2, 0.0, out=d2)


def _nearest(x, centers, chunk=65536):
    """Each row's nearest centre (the first of equals) and its squared distance."""
    labels = np.empty(len(x), dtype=np.int32)
    dist = np.empty(len(x))
    for s in range(0, len(x), chunk):
        d2 = _distances_to(*_feature_major(x[s:s + chunk]), centers)
        best, lab = dist[s:s + chunk], labels[s:s + chunk]
        best[...] = d2[0]
        lab[...] = 0
        for k in range(1, len(d2)):  # row-wise argmin (slow in NumPy along axis 0)
            lab[d2[k] < best] = k
            np.minimum(best, d2[k], out=best)
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
    xt, x_sq = _feature_major(x)
    first = rng.choice(len(x), p=weight / weight.sum())
    centers = [xt[:, first]]
    closest = _distances_to(xt, x_sq, xt[:, first][None])[0]
    n_trials = 2 + int(math.log(n_components))
    for _ in range(1, n_components):
        score = closest * weight
        total = score.sum()
        if total <= 0.0:
            raise _too_few_distinct(n_components)
        candidates = rng.choice(len(x), size=n_trials, p=score / total)
        # All candidates at once: one (trials, D) x (D, n) product.
        dist = np.minimum(_distances_to(xt, x_sq, xt[:, candidates].T), closest)
        best = int(np.argmin(dist @ weight))  # the first of equals, as one by one
        centers.append(xt[:, candidates[best]])
        closest = dist[best]
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


def _moments(x, w, resp, n_components, diagonal, chunk=65536):
    """Weights, means and covariances (about the means) from responsibilities.

    ``resp`` is either an int array of labels (each row wholly in its
    label's component) or a function: ``resp(sl)`` returns the ``(n, K)``
    responsibilities of rows ``sl``.  Float64 throughout; two passes (means,
    then centred scatter) for soft responsibilities.
    """
    if isinstance(resp, np.ndarray):
        return _label_moments(x, w, resp, n_components, diagonal)
    n, d = x.shape
    nk = np.zeros(n_components)
    sums = np.zeros((n_components, d))
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        r = resp(sl)
        if w is not None:
            r = r * w[sl, None]
        nk += r.sum(0)
        sums += r.T @ x[sl].astype(np.float64)
    nk_safe = np.maximum(nk, _NK_FLOOR)
    means = sums / nk_safe[:, None]
    cov = np.zeros((n_components, d) if diagonal else (n_components, d, d))
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        r = resp(sl)
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


def _label_moments(x, w, labels, n_components, diagonal):
    """`_moments` of hard labels: the rows grouped by label, each group's moments.

    Every start but ``init_params="random"`` is a hard assignment; grouping
    the rows by a mask per label (feature-major, long inner loops) is
    several times faster than the responsibility form, which multiplies
    every row by K mostly-zero columns.
    """
    d = x.shape[1]
    xt = np.ascontiguousarray(x.T, dtype=np.float64)
    weight = None if w is None else np.asarray(w, dtype=np.float64)
    nk = np.zeros(n_components)
    means = np.zeros((n_components, d))
    cov = np.zeros((n_components, d) if diagonal else (n_components, d, d))
    for k in range(n_components):
        mine = labels == k
        cols = xt[:, mine]
        wk = None if weight is None else weight[mine]
        nk[k] = cols.shape[1] if wk is None else wk.sum()
        nk_safe = max(nk[k], _NK_FLOOR)
        means[k] = (cols.sum(axis=1) if wk is None else cols @ wk) / nk_safe
        z = cols - means[k][:, None]
        zw = z if wk is None else z * wk
        cov[k] = np.add.reduce(zw * z, axis=1) if diagonal else zw @ z.T
        cov[k] /= nk_safe
    return nk / nk.sum(), means, cov, nk


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
    """The responsibilities EM starts from, as `_moments` takes them (labels or a function).

    Every row goes to its nearest given mean when ``means`` is given; else
    ``init_params`` decides (see :class:`GaussianMixture`).
    """
    k = n_components
    if means is not None:
        labels, _ = _nearest(X, means)
        return labels
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
    return labels
