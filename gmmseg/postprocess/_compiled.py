"""Connected regions and neighbour pairs of 2-D label maps, compiled with Numba.

A label map of a photo has a few thousand regions but millions of pixels,
and every row is a handful of runs of one label.  Labelling the runs (a
union-find over runs that touch in consecutive rows) does the per-pixel work
in two cheap scans: finding the runs, then writing each run's region.  The
NumPy/OpenCV path in `_graph` labels each label's mask with OpenCV, then
merges and renumbers the maps, several passes over the image per label.
The pixel pairs between regions come from one scan per direction without
image-sized temporaries.  Both give the same regions and pairs in the same
order as the NumPy path (``tests/test_postprocess.py``), which `_graph` and
`.labels` use without Numba (the ``fast`` extra; see
`gmmseg._system.compiled_kernels_wanted`).
"""

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def _root(parent, i):
    """The root of run ``i``, compressing the path on the way."""
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        following = parent[i]
        parent[i] = root
        i = following
    return root


@numba.njit(nogil=True, cache=True)
def _join(parent, a, b):
    """Union of the sets of runs ``a`` and ``b``: the smaller root stays the root."""
    ra, rb = _root(parent, a), _root(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@numba.njit(nogil=True, cache=True)
def label_regions(labels, eight):
    """Connected regions of equal label; labels below 0 belong to no region.

    Parameters
    ----------
    labels : (H, W) int ndarray
    eight : bool
        8-connected (pixels touching at a corner too) rather than 4-connected.

    Returns
    -------
    regions : (H, W) int32
        0 where ``labels < 0``, else 1..R in raster order of each region's
        first pixel.
    region_label : (R + 1,) int64
        Each region's label; -1 at index 0.
    """
    h, w = labels.shape
    n_runs = 0
    for i in range(h):
        for j in range(w):
            if labels[i, j] >= 0 and (j == 0 or labels[i, j] != labels[i, j - 1]):
                n_runs += 1
    start = np.empty(n_runs, np.int64)
    stop = np.empty(n_runs, np.int64)
    parent = np.empty(n_runs, np.int64)
    first = np.empty(h + 1, np.int64)       # the runs of row i: first[i]..first[i + 1]
    r = 0
    for i in range(h):
        first[i] = r
        j = 0
        while j < w:
            v = labels[i, j]
            k = j + 1
            while k < w and labels[i, k] == v:
                k += 1
            if v >= 0:
                start[r], stop[r], parent[r] = j, k, r
                r += 1
            j = k
    first[h] = r
    # Runs of one label in consecutive rows that share a column (or, 8-connected,
    # touch at a corner) are one region.  Both rows' runs are in column order.
    reach = 1 if eight else 0
    for i in range(1, h):
        p, p_end = first[i - 1], first[i]
        for c in range(first[i], first[i + 1]):
            while p < p_end and stop[p] + reach <= start[c]:
                p += 1
            q = p
            v = labels[i, start[c]]
            while q < p_end and start[q] < stop[c] + reach:
                if labels[i - 1, start[q]] == v:
                    _join(parent, c, q)
                q += 1
    # A region's root is its first run in raster order: numbering the roots in
    # run order numbers the regions in raster order of their first pixel.
    region = np.empty(n_runs, np.int32)
    region_label = np.empty(n_runs + 1, np.int64)
    region_label[0] = -1
    n_regions = 0
    for c in range(n_runs):
        root = _root(parent, c)
        if root == c:
            n_regions += 1
            region[c] = n_regions
        else:
            region[c] = region[root]
    regions = np.zeros((h, w), np.int32)
    for i in range(h):
        for c in range(first[i], first[i + 1]):
            g = region[c]
            region_label[g] = labels[i, start[c]]
            regions[i, start[c]:stop[c]] = g
    return regions, region_label[:n_regions + 1]


@numba.njit(nogil=True, cache=True)
def neighbour_pairs(regions, di, dj, lowest_valid):
    """Flat indices ``(ia, ib)`` of the pixel pairs at offset ``(di, dj)`` (``di``
    0 or 1) in different regions, both at least ``lowest_valid``, in raster
    order of ``ia``: what `_graph._neighbour_pairs` finds with NumPy for one
    offset, without image-sized temporaries."""
    h, w = regions.shape
    j0, j1 = max(0, -dj), w - max(0, dj)
    low = regions.dtype.type(lowest_valid)
    n = 0
    # Loops from 0 over slices: indices the compiler can prove non-negative
    # need no wrap-around check, so it vectorises them (5x faster here).
    for i in range(h - di):
        row, below = regions[i, j0:j1], regions[i + di, j0 + dj:j1 + dj]
        for j in range(row.shape[0]):   # a branch-free count
            a, b = row[j], below[j]
            n += (a != b) & (a >= low) & (b >= low)
    ia = np.empty(n, np.int64)
    ib = np.empty(n, np.int64)
    step = di * w + dj
    n = 0
    for i in range(h - di):
        row, below = regions[i, j0:j1], regions[i + di, j0 + dj:j1 + dj]
        for j in range(row.shape[0]):
            a, b = row[j], below[j]
            if a != b and a >= low and b >= low:
                ia[n] = i * w + j0 + j
                ib[n] = i * w + j0 + j + step
                n += 1
    return ia, ib
