"""Column statistics of feature matrices: pure functions of float32 row arrays.

Owns the chunked passes over an (n, D) feature matrix: mean and std with
float64 accumulation, covariance and the PCA fit, the in-place affine map
(standardisation and weights), and the masked copy of rows.  Chunks bound
the temporaries whatever the image size.  It knows nothing of images,
feature names or fitted state (that is :mod:`.extractor`).
"""

from __future__ import annotations

import numpy as np

from ..errors import counted

# Elements (rows x columns) per chunk when copying rows or accumulating
# float64 statistics.
_CHUNK_ELEMENTS = 1 << 22
# Rows per block of the flat passes over a feature matrix: a few blocks of
# float64 stay in the level-2 cache.
_BLOCK_ROWS = 1 << 13


def _chunk_rows(n_columns: int) -> int:
    return max(1024, _CHUNK_ELEMENTS // max(n_columns, 1))


def _column_mean_std(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std of each column of ``X`` (n, D), in one pass.

    Sums of ``x - shift`` and its square are accumulated in float64, with
    ``shift`` a rough mean from a strided subset, so ``E[d^2] - E[d]^2`` does
    not cancel even for columns with a large offset.  Each block of rows is
    worked on as one flat run of numbers (the shift repeated row after row)
    and summed per column by a matrix-vector product: NumPy would otherwise
    run D-element inner loops over the rows.
    """
    n, d = X.shape
    shift = X[:: max(1, n // 4096)].mean(axis=0, dtype=np.float64).astype(np.float32)
    s1 = np.zeros(d)
    s2 = np.zeros(d)
    rows = max(1, min(n, _BLOCK_ROWS))
    pattern = np.tile(shift, rows)
    ones = np.ones(rows)
    dev32, dev = np.empty(rows * d, np.float32), np.empty(rows * d)
    for r0 in range(0, n, rows):
        block = X[r0 : r0 + rows].reshape(-1)
        m = block.size // d
        part = dev[: block.size]
        # The deviation in float32, as the data are, then summed in float64.
        np.subtract(block, pattern[: block.size], out=dev32[: block.size])
        np.copyto(part, dev32[: block.size])
        s1 += ones[:m] @ part.reshape(m, d)
        np.multiply(part, part, out=part)
        s2 += ones[:m] @ part.reshape(m, d)
    mean_dev = s1 / n
    return shift + mean_dev, np.sqrt(np.maximum(s2 / n - mean_dev * mean_dev, 0.0))


def _covariance(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    n, d = X.shape
    step = _chunk_rows(d)
    cov = np.zeros((d, d))
    for r0 in range(0, n, step):
        chunk = X[r0 : r0 + step].astype(np.float64)
        chunk -= mean
        cov += chunk.T @ chunk
    return cov / n


def _affine_in_place(X: np.ndarray, offset: np.ndarray, factor: np.ndarray) -> None:
    """``X = (X - offset) * factor`` column-wise, in float32, without temporaries.

    Blocks of rows are worked on as flat runs against the offset and factor
    repeated row after row (the same float32 operations on every element as
    broadcasting, without its D-element inner loops); small blocks keep both
    operations in cache.
    """
    offset32 = offset.astype(np.float32)
    factor32 = factor.astype(np.float32)
    subtract, multiply = bool(np.any(offset32 != 0)), bool(np.any(factor32 != 1))
    if not (subtract or multiply) or X.size == 0:
        return
    if not X.flags.c_contiguous:
        X -= offset32
        X *= factor32
        return
    rows = min(X.shape[0], _BLOCK_ROWS)
    offsets, factors = np.tile(offset32, rows), np.tile(factor32, rows)
    for r0 in range(0, X.shape[0], rows):
        flat = X[r0 : r0 + rows].reshape(-1)
        if subtract:
            np.subtract(flat, offsets[: flat.size], out=flat)
        if multiply:
            np.multiply(flat, factors[: flat.size], out=flat)


def _copy_rows(dst: np.ndarray, src: np.ndarray, mask: np.ndarray | None) -> None:
    """Copy the rows of ``src`` (N, d) selected by the flat ``mask`` into ``dst``, chunked."""
    if mask is None:
        dst[...] = src
        return
    step = _chunk_rows(src.shape[1])
    pos = 0
    for r0 in range(0, src.shape[0], step):
        rows = src[r0 : r0 + step][mask[r0 : r0 + step]]
        dst[pos : pos + rows.shape[0]] = rows
        pos += rows.shape[0]



def _fit_pca(
    X: np.ndarray, n_components: int | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal axes of the rows of ``X`` (n, D).

    Returns
    -------
    components : (k, D) float64 ndarray
        Unit rows, largest variance first; each row's largest-magnitude entry
        is positive so the result does not depend on the eigensolver's signs.
    mean : (D,) float64 ndarray
    ratio : (k,) float64 ndarray
        Explained variance ratio of each kept component.
    """
    d = X.shape[1]
    mean = X.mean(axis=0, dtype=np.float64)
    cov = _covariance(X, mean)
    variances, vectors = np.linalg.eigh(cov)
    order = np.argsort(variances)[::-1]
    variances = np.clip(variances[order], 0.0, None)
    vectors = vectors[:, order].T
    total = variances.sum()
    ratio = variances / total if total > 0 else np.full(d, 1.0 / d)
    if isinstance(n_components, int):
        if n_components > d:
            raise ValueError(
                f"pca={n_components} components requested but the features have only "
                f"{counted(d, 'column')}"
            )
        k = n_components
    else:
        k = min(d, int(np.searchsorted(np.cumsum(ratio), n_components - 1e-12)) + 1)
    components = vectors[:k]
    signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, np.newaxis]
    return components, mean, ratio[:k]
