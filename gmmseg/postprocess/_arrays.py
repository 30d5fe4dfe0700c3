"""Argument checks and array plumbing shared by the postprocess modules.

Owns: the checks of label maps, masks, real arrays and ints that give every
public function of :mod:`gmmseg.postprocess` the same messages; the row
blocks that bound float temporaries; the runs of equal values that counting
and summing per label read instead of pixels.  Holds no algorithm of its
own and imports no other postprocess module.
"""

import numbers

import numpy as np


# Pixels per block for chunked float work; bounds temporaries to a few MiB.
_BLOCK = 1 << 20


def _as_label_array(labels, name, *, ndims=(2, 3)):
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_):
        raise TypeError(f"{name} must be an integer array, got dtype {labels.dtype}")
    if labels.ndim not in ndims:
        allowed = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {allowed}, got shape {labels.shape}")
    if labels.size and labels.min() < -1:
        raise ValueError(
            f"{name} must hold labels >= 0 and -1 for invalid pixels, "
            f"got minimum {labels.min()}"
        )
    return labels


def _as_mask(valid, shape, name="valid"):
    if valid is None:
        return None
    valid = np.asarray(valid)
    if valid.dtype != np.bool_:
        raise TypeError(f"{name} must be a bool array, got dtype {valid.dtype}")
    if valid.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {valid.shape}")
    return valid


def _check_real(array, name):
    if np.iscomplexobj(array) or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise TypeError(f"{name} must be a real numeric or bool array, got dtype {array.dtype}")


def _as_int(value, name, *, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _row_blocks(n_rows, row_size):
    """Yield ``slice`` objects over rows, about ``_BLOCK`` elements each."""
    step = max(1, _BLOCK // max(1, row_size))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _run_starts(flat):
    """Indices where a run of equal values starts in a 1-D array."""
    if flat.size == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))


def _run_lengths(starts, size):
    """Length of each run, given the run starts of a 1-D array of ``size``."""
    return np.diff(np.append(starts, size))
