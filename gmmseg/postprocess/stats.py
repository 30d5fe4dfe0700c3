"""Per-segment measurements: pixel counts, shares, means and spreads.

Owns: :func:`segment_stats` (what a report says about each segment, in the
input's units) and :func:`pixel_counts` (pixels per label, counted by runs).
Changes no label and draws nothing.
"""

import cv2
import numpy as np

from ._arrays import (_as_int, _as_label_array, _as_mask, _check_real, _row_blocks,
                      _run_lengths, _run_starts)


def segment_stats(labels, data, n_components, *, valid=None):
    """Pixel count, share, mean and standard deviation of every segment.

    Parameters
    ----------
    labels : (H, W) or (Z, H, W) int ndarray
        Labels ``0..n_components-1``; -1 pixels are left out.
    data : (..., C) or (...) ndarray
        Image data in its own units (not display-scaled); spatial shape
        equal to ``labels.shape``. A missing channel axis means C = 1.
    n_components : int
        Number of labels K; every label ``0..K-1`` gets an entry.
    valid : bool ndarray of ``labels.shape``, optional
        Further pixels to leave out (False).

    Returns
    -------
    stats : list of dict, one per label ``k`` in ``0..K-1``
        ``{"label": k, "pixels": int, "share": float, "mean": [float] * C,
        "std": [float] * C}`` with plain Python numbers (JSON-ready).
        ``share`` is the fraction of counted pixels (label >= 0 and valid);
        ``std`` is the population standard deviation. Labels without pixels
        have ``pixels`` 0, ``share`` 0.0 and ``mean`` and ``std`` None.

    Examples
    --------
    >>> labels = np.array([[0, 0, 1, -1]])
    >>> data = np.array([[1.0, 3.0, 5.0, 100.0]])
    >>> [(s["pixels"], s["mean"]) for s in segment_stats(labels, data, 3)]
    [(2, [2.0]), (1, [5.0]), (0, None)]
    """
    labels = _as_label_array(labels, "labels")
    n_components = _as_int(n_components, "n_components", minimum=1)
    if labels.size and labels.max() >= n_components:
        raise ValueError(
            f"labels must be below n_components ({n_components}), got maximum {labels.max()}"
        )
    data = np.asarray(data)
    if data.shape == labels.shape:
        data = data[..., np.newaxis]
    if data.shape[:-1] != labels.shape:
        raise ValueError(
            f"data must have shape {labels.shape} + (C,), got {data.shape}"
        )
    _check_real(data, "data")
    valid = _as_mask(valid, labels.shape)
    n_channels = data.shape[-1]
    if data.dtype == np.uint8 and n_components < 255 and labels.size:
        counts, sums, sumsq, shift = _uint8_moments(labels, data, valid, n_components)
        return _stats_entries(counts, sums, sumsq, shift)

    flat_labels = labels.reshape(-1)
    flat_data = data.reshape(-1, n_channels)
    flat_valid = valid.reshape(-1) if valid is not None else None
    counts = np.zeros(n_components, dtype=np.int64)
    sums = np.zeros((n_channels, n_components))
    sumsq = np.zeros((n_channels, n_components))
    shift = None
    for rows in _row_blocks(flat_labels.size, n_channels):
        lab = flat_labels[rows].astype(np.intp, copy=False)   # -1 must not wrap
        if flat_valid is not None:
            lab = np.where(flat_valid[rows], lab, -1)
        # Labels come in runs along rows: sum each run (contiguous), then the
        # runs per label, instead of one weighted count per pixel.
        starts = _run_starts(lab)
        bins = lab[starts] + 1                          # bin 0: left-out pixels
        if not bins.any():
            continue
        values = flat_data[rows].astype(np.float64)
        if shift is None:
            # Accumulate around a typical value so sum of squares does not cancel.
            shift = values[starts[np.argmax(bins > 0)]].copy()
        values -= shift
        counts += np.bincount(bins, _run_lengths(starts, lab.size),
                              minlength=n_components + 1)[1:].astype(np.int64)
        left_out = bins == 0    # their values may be NaN: keep them out of the sums
        for total, run_sums in ((sums, np.add.reduceat(values, starts, axis=0)),
                                (sumsq, np.add.reduceat(values * values, starts, axis=0))):
            run_sums[left_out] = 0.0
            for c in range(n_channels):
                total[c] += np.bincount(bins, run_sums[:, c], minlength=n_components + 1)[1:]
    if not (np.all(np.isfinite(sums)) and np.all(np.isfinite(sumsq))):
        raise ValueError(
            "data has non-finite values at labelled pixels; pass valid= to leave them out"
        )
    return _stats_entries(counts, sums, sumsq, shift)


# Pixels per histogram block: OpenCV counts in float32, exact below 2**24.
_HIST_BLOCK = 1 << 23


def _uint8_moments(labels, data, valid, n_components):
    """Counts and shifted sums of :func:`segment_stats` for uint8 data, exactly.

    One histogram of (label, value) pairs per channel (OpenCV, a pass over
    the pixels) gives each label's count and integer sums of values and
    squares; these are turned into sums about the first counted pixel's
    value, the shift the general path uses, so both give the same numbers.
    """
    n_labels = int(n_components)
    rows = labels.reshape(-1, labels.shape[-1])
    pixels = data.reshape(rows.shape + (data.shape[-1],))
    mask = None if valid is None else valid.reshape(rows.shape)
    n_channels = pixels.shape[-1]
    hist = np.zeros((n_channels, n_labels, 256))
    step = max(1, _HIST_BLOCK // rows.shape[1])
    for r0 in range(0, rows.shape[0], step):
        # -1 (and anything outside 0..K-1) falls outside the histogram's range.
        tags = rows[r0 : r0 + step].astype(np.uint8)
        block = np.ascontiguousarray(pixels[r0 : r0 + step])
        where = None if mask is None else mask[r0 : r0 + step].view(np.uint8)
        for c in range(n_channels):
            hist[c] += cv2.calcHist([tags, block], [0, 1 + c], where, [n_labels, 256],
                                    [0, n_labels, 0, 256])
    hist = np.rint(hist)
    counts = hist[0].sum(axis=1).astype(np.int64)
    if not counts.any():
        return counts, np.zeros((n_channels, n_labels)), np.zeros((n_channels, n_labels)), None
    flat = labels.reshape(-1)
    counted = flat >= 0 if valid is None else (flat >= 0) & valid.reshape(-1)
    shift = pixels.reshape(-1, n_channels)[int(np.argmax(counted))].astype(np.float64)
    v = np.arange(256.0)
    total = hist @ v                                        # (C, K) sums of values
    squares = hist @ (v * v)
    shifted = total - counts * shift[:, None]
    shifted_sq = squares - 2.0 * shift[:, None] * total + counts * (shift * shift)[:, None]
    return counts, shifted, shifted_sq, shift


def _stats_entries(counts, sums, sumsq, shift):
    """The list :func:`segment_stats` returns, from counts and sums about ``shift``."""
    n_components = len(counts)
    total = int(counts.sum())
    stats = []
    for k in range(n_components):
        n = int(counts[k])
        entry = {"label": k, "pixels": n, "share": n / total if total else 0.0}
        if n:
            mean = sums[:, k] / n
            var = np.maximum(sumsq[:, k] / n - mean**2, 0.0)
            entry["mean"] = [float(m) for m in mean + shift]
            entry["std"] = [float(s) for s in np.sqrt(var)]
        else:
            entry["mean"] = None
            entry["std"] = None
        stats.append(entry)
    return stats


def pixel_counts(labels, n=None):
    """Pixels of each label ``0 .. n - 1``; -1 (invalid) pixels are not counted.

    Labels come in runs along rows, so the runs are counted, not the pixels
    (several times faster than ``np.bincount`` on a large map).

    Parameters
    ----------
    labels : (H, W) or (Z, H, W) int ndarray
        Labels >= 0, -1 for invalid pixels.
    n : int, optional
        Number of labels; default the highest label + 1.

    Returns
    -------
    ndarray of int64, shape (n,)

    Examples
    --------
    >>> pixel_counts(np.array([[0, 0, 2, -1]])).tolist()
    [2, 0, 1]
    """
    labels = _as_label_array(labels, "labels")
    high = int(labels.max()) + 1 if labels.size else 0
    n = high if n is None else _as_int(n, "n", minimum=0)
    if high > n:
        raise ValueError(f"labels must be below n ({n}), got maximum {high - 1}")
    flat = labels.reshape(-1)
    starts = _run_starts(flat)
    bins = flat[starts].astype(np.intp) + 1        # bin 0: invalid pixels
    return np.bincount(bins, _run_lengths(starts, flat.size),
                       minlength=n + 1)[1:].astype(np.int64)
