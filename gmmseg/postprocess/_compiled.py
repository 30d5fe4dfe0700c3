"""Connected regions and neighbour pairs of 2-D label maps, compiled with Numba.

A label map of a photo has a few thousand regions but millions of pixels,
and every row is a handful of runs of one label.  Labelling the runs (a
union-find over runs that touch in consecutive rows) does the per-pixel work
in two cheap scans: finding the runs (:func:`label_runs`), then writing each
run's value (:func:`paint_runs`).  The small-region clean-up works on the
runs in between: region sizes, the borders between regions
(:func:`run_borders`: touching runs and how many pixel pairs join them) and
renaming regions cost per run, not per pixel.  The NumPy/OpenCV path in
`_graph` labels each label's mask with OpenCV, then merges and renumbers the
maps, several passes over the image per label.  The pixel pairs between
regions come from one scan per direction without image-sized temporaries.
All give the same regions, borders and pairs as the NumPy path
(``tests/test_postprocess.py``), which `_graph` and `.labels` use without
Numba (the ``fast`` extra; see `gmmseg._system.compiled_kernels_wanted`).
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
def label_runs(labels, eight):
    """Connected regions of equal label as runs; labels below 0 belong to no region.

    Parameters
    ----------
    labels : (H, W) int ndarray
    eight : bool
        8-connected (pixels touching at a corner too) rather than 4-connected.

    Returns
    -------
    first : (H + 1,) int64
        The runs of row ``i`` are ``first[i]`` to ``first[i + 1]``, in column order.
    start, stop : (n_runs,) int64
        Each run's columns: ``start <= j < stop``.
    run_region : (n_runs,) int32
        Each run's region, 1..R in raster order of each region's first pixel.
    region_label : (R + 1,) int64
        Each region's label; -1 at index 0 (pixels in no run).
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
    first = np.empty(h + 1, np.int64)
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
    run_region = np.empty(n_runs, np.int32)
    region_label = np.empty(n_runs + 1, np.int64)
    region_label[0] = -1
    n_regions = 0
    for c in range(n_runs):
        root = _root(parent, c)
        if root == c:
            n_regions += 1
            run_region[c] = n_regions
        else:
            run_region[c] = run_region[root]
    for i in range(h):
        for c in range(first[i], first[i + 1]):
            region_label[run_region[c]] = labels[i, start[c]]
    return first, start, stop, run_region, region_label[:n_regions + 1]


@numba.njit(nogil=True, cache=True)
def paint_runs(first, start, stop, run_value, width, blank):
    """The ``(H, W)`` map with ``run_value[c]`` on run ``c`` and ``blank`` off the runs."""
    h = first.shape[0] - 1
    out = np.empty((h, width), run_value.dtype)
    fill = run_value.dtype.type(blank)
    for i in range(h):
        j = 0
        for c in range(first[i], first[i + 1]):
            out[i, j:start[c]] = fill
            out[i, start[c]:stop[c]] = run_value[c]
            j = stop[c]
        out[i, j:] = fill
    return out


@numba.njit(nogil=True, cache=True)
def run_borders(first, start, stop, run_region, di, dj):
    """Touching runs in different regions (both >= 1) at pixel offset ``(di, dj)``
    (``di`` 0 and ``dj`` 1, or ``di`` 1 and ``dj`` -1, 0 or 1): their regions
    ``(ra, rb)``, ``rb`` the one at the offset, and how many pixel pairs join
    them (``length``), one entry per pair of runs, all of ``run_region``'s type.
    One scan counts the entries, a second writes them."""
    empty = np.empty(0, run_region.dtype)
    n = _scan_run_borders(first, start, stop, run_region, di, dj, empty, empty, empty)
    ra, rb, length = np.empty(n, run_region.dtype), np.empty(n, run_region.dtype), \
        np.empty(n, run_region.dtype)
    _scan_run_borders(first, start, stop, run_region, di, dj, ra, rb, length)
    return ra, rb, length


@numba.njit(nogil=True, cache=True)
def _scan_run_borders(first, start, stop, run_region, di, dj, ra, rb, length):
    """:func:`run_borders`' scan: the number of entries, written where ``ra`` has room."""
    h = first.shape[0] - 1
    write = ra.shape[0] > 0
    m = 0
    if di == 0:
        for i in range(h):
            for c in range(first[i], first[i + 1] - 1):
                a, b = run_region[c], run_region[c + 1]
                if stop[c] == start[c + 1] and a != b and a > 0 and b > 0:
                    if write:
                        ra[m], rb[m], length[m] = a, b, 1
                    m += 1
        return m
    for i in range(h - 1):
        q, q_end = first[i + 1], first[i + 2]
        for p in range(first[i], first[i + 1]):
            # Pixel j of run p meets pixel j + dj of run q: j in [start[q] - dj, stop[q] - dj).
            while q < q_end and stop[q] - dj <= start[p]:
                q += 1
            k = q
            while k < q_end and start[k] - dj < stop[p]:
                overlap = min(stop[p], stop[k] - dj) - max(start[p], start[k] - dj)
                a, b = run_region[p], run_region[k]
                if overlap > 0 and a != b and a > 0 and b > 0:
                    if write:
                        ra[m], rb[m], length[m] = a, b, overlap
                    m += 1
                k += 1
    return m


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


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def region_moments3(regions, values, origin, n):
    """Pixels, sums and upper-triangle cross products of three channels
    (``values``, ``(H, W, 3)``) about ``origin`` per region (``regions``
    0..n-1, below 0 in none), float64: ``(n + 1, 10)``, row 0 unused (no
    region), then each region's count, three sums and the products 00, 01,
    02, 11, 12, 22.

    A photo's regions in Lab colour: each run of one region along a row is
    summed in registers (reassociated, so that the sums vectorise across the
    run), then added to its region.
    """
    out = np.zeros((n + 1, 10))
    h, w = regions.shape
    o0, o1, o2 = origin[0], origin[1], origin[2]
    for i in range(h):
        row, pixels = regions[i], values[i]
        j = 0
        while j < w:
            r = row[j]
            e = j + 1
            while e < w and row[e] == r:
                e += 1
            if r < 0:           # no region (values there may be NaN)
                j = e
                continue
            s0 = s1 = s2 = q00 = q01 = q02 = q11 = q12 = q22 = 0.0
            for k in range(j, e):
                x0 = np.float64(pixels[k, 0]) - o0
                x1 = np.float64(pixels[k, 1]) - o1
                x2 = np.float64(pixels[k, 2]) - o2
                s0 += x0
                s1 += x1
                s2 += x2
                q00 += x0 * x0
                q01 += x0 * x1
                q02 += x0 * x2
                q11 += x1 * x1
                q12 += x1 * x2
                q22 += x2 * x2
            b = r + 1
            out[b, 0] += e - j
            out[b, 1] += s0
            out[b, 2] += s1
            out[b, 3] += s2
            out[b, 4] += q00
            out[b, 5] += q01
            out[b, 6] += q02
            out[b, 7] += q11
            out[b, 8] += q12
            out[b, 9] += q22
            j = e
    return out
