"""The mixture's parameters as small float64 arrays, and conversions between them.

This module owns the shapes each ``covariance_type`` stores (``(K, D, D)``,
``(D, D)``, ``(K, D)``, ``(K,)``), the Cholesky factors of the precisions
(scikit-learn's layout), regularisation of the diagonal, the number of free
parameters, and the canonical order of components.  Functions of a few
``K x D x D`` arrays only: the per-row work is in `_em`; nothing here sees
the data, validates user input or touches files.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import linalg


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


@functools.cache
def _upper_mask(d):
    """``(D, D)`` ones on and above the diagonal (``np.triu`` rebuilds its mask each call)."""
    mask = np.triu(np.ones((d, d)))
    mask.flags.writeable = False  # shared by every call
    return mask


def _cholesky_factors(covariances, covariance_type):
    """Precision Cholesky factors of ``covariances``, sklearn's layout.

    Raises ``np.linalg.LinAlgError`` when a covariance is not positive definite.
    """
    if covariance_type in ("full", "tied"):
        covs = covariances[None] if covariance_type == "tied" else covariances
        try:
            # One batched call for all K: the per-component SciPy calls cost
            # more than the arithmetic in the short EM runs of the start-up.
            cov_chol = np.linalg.cholesky(covs)
        except np.linalg.LinAlgError:
            cov_chol = None
        if cov_chol is None or not np.all(np.isfinite(cov_chol)):
            for k, cov in enumerate(covs):  # which component failed
                try:
                    linalg.cholesky(cov, lower=True)
                except (linalg.LinAlgError, ValueError) as err:
                    raise np.linalg.LinAlgError(f"component {k}") from err
            raise np.linalg.LinAlgError("component 0")
        # The inverse of a triangular factor is triangular; LU rounding can
        # leave tiny entries below the diagonal, which the mask clears.
        out = np.swapaxes(np.linalg.inv(cov_chol), 1, 2) * _upper_mask(covs.shape[-1])
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



def _add_diagonal(covariances, amount, covariance_type):
    """A copy of ``covariances`` with ``amount`` added to every variance."""
    covariances = covariances.copy()
    if covariance_type == "full":
        d = covariances.shape[-1]
        covariances[:, np.arange(d), np.arange(d)] += amount
    elif covariance_type == "tied":
        covariances.flat[:: covariances.shape[0] + 1] += amount
    else:
        covariances += amount
    return covariances


def _full_factors(prec_chol, covariance_type, n_components, n_features):
    """``(P, C)`` as ``(K, D, D)``: precision Cholesky and its inverse transpose."""
    k, d, ctype = n_components, n_features, covariance_type
    if ctype in ("diag", "spherical"):
        p = np.broadcast_to(prec_chol.reshape(k, -1), (k, d))
        p_full = _as_full(p, "diag", k, d)
        c_full = _as_full(1.0 / p, "diag", k, d)
        return p_full, c_full
    p_full = _as_full(prec_chol, ctype, k, d)
    c_full = np.swapaxes(np.linalg.inv(p_full), 1, 2)
    return p_full, c_full
