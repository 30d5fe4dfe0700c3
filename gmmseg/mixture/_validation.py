"""The allowed values of the mixture's inputs, and the one check of each.

This module owns the choices (`COVARIANCE_TYPES`, `CRITERIA`,
`INIT_METHODS`) and one function per value that returns it, converted, or
raises a `ValueError` naming the parameter, what was expected and what was
given.  The estimator, `select_k` and the layers above (pipeline, batch, CLI)
call these instead of repeating a check, so each value has one owner and one
message.  Messages speak the API's parameter names (``n_components``), never
command-line flags: the CLI translates them.

It fits nothing and touches no files.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, sparse

from ._em import _CHUNK_FLOATS
from ._parameters import (
    _cholesky_factors,
    _covariance_shape,
    _precision_cholesky_from_precisions,
)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
CRITERIA = ("auto", "icl", "bic", "aic")
INIT_METHODS = ("k-means++", "kmeans", "random", "random_from_data")


def _check_integer(value, name, minimum):
    """``value`` as an int >= ``minimum``; bool, float and str are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_n_components(value, name="n_components"):
    """A number of mixture components K: an integer >= 1.

    Parameters
    ----------
    value : int
    name : str, default="n_components"
        The parameter's name, for the message.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        ``value`` is not an integer (bool, float and str are refused) or is
        below 1.

    Examples
    --------
    >>> check_n_components(3)
    3
    >>> check_n_components(2.5)
    Traceback (most recent call last):
    ...
    ValueError: n_components must be an integer >= 1, got 2.5
    """
    return _check_integer(value, name, 1)


def check_k_values(values, name="k_values"):
    """Candidate numbers of components: sorted, duplicates dropped.

    Each value is checked by :func:`check_n_components`.

    Parameters
    ----------
    values : iterable of int
    name : str, default="k_values"
        The parameter's name, for the message.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        ``values`` is not iterable, is empty, or holds a value that is not
        an integer >= 1.

    Examples
    --------
    >>> check_k_values([4, 2, 2, 3])
    [2, 3, 4]
    """
    expected = f"{name} must be a non-empty iterable of integers >= 1"
    try:
        values_sorted = sorted(set(values))
    except TypeError as err:
        raise ValueError(f"{expected}, got {values!r}") from err
    if not values_sorted:
        raise ValueError(f"{expected}, got {values!r}")
    try:
        return [check_n_components(k, name) for k in values_sorted]
    except ValueError as err:
        raise ValueError(f"{expected}, got {values!r}") from err


def check_covariance_type(value, name="covariance_type"):
    """One of :data:`COVARIANCE_TYPES`.

    Examples
    --------
    >>> check_covariance_type("diag")
    'diag'
    >>> check_covariance_type("wide")
    Traceback (most recent call last):
    ...
    ValueError: covariance_type must be one of ('full', 'tied', 'diag', 'spherical'), got 'wide'
    """
    if value not in COVARIANCE_TYPES:
        raise ValueError(f"{name} must be one of {COVARIANCE_TYPES}, got {value!r}")
    return value


def check_criterion(value, name="criterion"):
    """One of :data:`CRITERIA`, the model-selection criteria of `select_k`.

    ``"bic"`` and ``"aic"`` judge the density fit; ``"icl"`` (BIC plus twice
    the classification entropy) the clusters; ``"auto"`` takes ICL's count
    where its clusters are clear, else BIC's choice (see :func:`select_k`).

    Examples
    --------
    >>> check_criterion("aic")
    'aic'
    """
    if value not in CRITERIA:
        raise ValueError(f"{name} must be one of {CRITERIA}, got {value!r}")
    return value


def _check_init_params(value):
    if value not in INIT_METHODS:
        raise ValueError(f"init_params must be one of {INIT_METHODS}, got {value!r}")
    return value


def _check_non_negative(value, name):
    if not isinstance(value, (int, float, np.floating)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return value


def _check_dtype(value):
    """The compute dtype: float32, float64, or None (follow the data, see `_check_X`)."""
    if value is None:
        return None
    try:
        dtype = np.dtype(value)
    except TypeError as err:
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {value!r}") from err
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {value!r}")
    return dtype


def _as_real_array(X):
    """``X`` as an ndarray of real numbers (or bools), not yet checked for shape.

    Object arrays of numbers are converted, as scikit-learn does; anything
    that is not numbers raises, with numpy's reason.
    """
    if sparse.issparse(X):
        raise ValueError(
            "X is a sparse matrix, but GaussianMixture needs dense data: pass X.toarray()")
    if isinstance(X, (str, bytes)):
        raise TypeError("X must be a numeric array of shape (n_samples, n_features)")
    try:
        X = np.asarray(X)
    except (TypeError, ValueError) as err:
        raise ValueError(f"X must be a numeric array: {err}") from err
    if X.dtype == object:
        try:
            X = X.astype(np.float64)
        except TypeError as err:  # an element that is no number at all: a dict, None
            raise TypeError(f"X must hold numbers only: {err}") from err
        except ValueError as err:
            raise ValueError(f"X must hold numbers only: {err}") from err
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"X is complex ({X.dtype}): Complex data not supported; "
                         "pass X.real, X.imag or np.abs(X) as features")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise ValueError(f"X must be numeric, got dtype {X.dtype}")
    return X


def _check_X(X, dtype):
    """``X`` as a C-contiguous finite ``(N, D)`` array of ``dtype``, N and D >= 1.

    ``dtype=None`` keeps float32 data float32 and makes anything else float64,
    scikit-learn's rule: float64 in, float64 out.
    """
    X = _as_real_array(X)
    if X.ndim != 2:
        hint = (". Reshape your data: X.reshape(-1, 1) if it has a single feature, "
                "X.reshape(1, -1) if it is a single sample") if X.ndim == 1 else ""
        raise ValueError(
            f"X must be 2-D (n_samples, n_features), got an array of shape {X.shape}{hint}")
    for axis, what in enumerate(("sample(s)", "feature(s)")):
        if X.shape[axis] == 0:
            raise ValueError(f"X is empty: found array with 0 {what} (shape={X.shape}) "
                             "while a minimum of 1 is required.")
    if dtype is None:
        dtype = np.float32 if X.dtype == np.float32 else np.float64
    X = np.ascontiguousarray(X, dtype=dtype)
    # In row blocks: one (n_samples, n_features) bool array is as large as X.
    step = max(1, _CHUNK_FLOATS // X.shape[1])
    if not all(np.isfinite(X[r0:r0 + step]).all() for r0 in range(0, X.shape[0], step)):
        raise ValueError("X contains NaN or infinity; remove or impute those rows")
    return X


def _check_sample_weight(sample_weight, n):
    """Row weights as float64 ``(n,)``, finite, >= 0 with a positive sum; or None."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError("sample_weight is all zero: at least one row needs a positive weight")
    return w


def _check_init_arrays(weights_init, means_init, precisions_init, n_components, n_features,
                       covariance_type):
    """The given initial parameters, float64, keyed ``weights``, ``means``, ``prec_chol``.

    The precisions are returned as their Cholesky factors, as scikit-learn
    handles ``precisions_init``.
    """
    k, d, ctype = n_components, n_features, covariance_type
    out = {}
    if weights_init is not None:
        w = np.asarray(weights_init, dtype=np.float64)
        if w.shape != (k,):
            raise ValueError(f"weights_init must have shape ({k},), got {w.shape}")
        if (w < 0).any() or not np.isclose(w.sum(), 1.0, atol=1e-6):
            raise ValueError("weights_init must be non-negative and sum to 1")
        out["weights"] = w
    if means_init is not None:
        m = np.asarray(means_init, dtype=np.float64)
        if m.shape != (k, d):
            raise ValueError(f"means_init must have shape ({k}, {d}), got {m.shape}")
        out["means"] = m
    if precisions_init is not None:
        p = np.asarray(precisions_init, dtype=np.float64)
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


def _check_saved_arrays(arrays, covariance_type, n_components):
    """Raise ``ValueError`` unless arrays read from a model file form a fitted mixture.

    ``arrays`` holds ``weights_``, ``means_``, ``covariances_`` and
    ``precisions_cholesky_``: shapes must agree with each other, with
    ``n_components`` and ``covariance_type``, values be finite, weights sum
    to 1 and covariances be positive definite.
    """
    weights, means = arrays["weights_"], arrays["means_"]
    if means.ndim != 2 or weights.shape != (means.shape[0],):
        raise ValueError("weights_/means_ shapes do not match")
    k, d = means.shape
    if k != n_components:
        raise ValueError("n_components does not match the arrays")
    shape = _covariance_shape(covariance_type, k, d)
    for name in ("covariances_", "precisions_cholesky_"):
        if arrays[name].shape != shape:
            raise ValueError(f"{name} has shape {arrays[name].shape}, expected {shape}")
    if not all(np.isfinite(a).all() for a in arrays.values()):
        raise ValueError("non-finite values")
    if (weights < 0).any() or abs(weights.sum() - 1.0) > 1e-6:
        raise ValueError("weights_ must be non-negative and sum to 1")
    _cholesky_factors(arrays["covariances_"], covariance_type)  # PD check
