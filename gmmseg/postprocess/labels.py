"""Label maps from responsibilities, and their clean-up.

Owns: hard labels and the normalised entropy from responsibilities
``(..., K)``, putting per-valid-pixel rows back on the pixel grid, and
merging connected pieces under a minimum size into a neighbour
(:func:`remove_small_regions`, whose passes :mod:`.regions` also uses for
its finest level).  Fits no model, draws nothing, builds no hierarchy.
"""

import logging
import math
import numbers

import numpy as np
from scipy import sparse, special
from scipy.sparse import csgraph

from . import _graph
from ._arrays import _as_int, _as_label_array, _as_mask, _row_blocks
from ._graph import _half_offsets

logger = logging.getLogger(__name__)


# Each pass of remove_small_regions merges at least one region, so this only
# bounds pathological inputs (long chains of ever larger small regions).
_MAX_PASSES = 50


# ----------------------------------------------------------------------------
# labels from responsibilities


def _as_proba(proba):
    """``proba`` as a float ``(..., K)`` array, or a TypeError/ValueError saying why not."""
    proba = np.asarray(proba)
    if not np.issubdtype(proba.dtype, np.floating):
        raise TypeError(f"proba must be a float array, got dtype {proba.dtype}")
    if proba.ndim < 1 or proba.shape[-1] < 1:
        raise ValueError(f"proba must have shape (..., K) with K >= 1, got {proba.shape}")
    return proba


def labels_from_proba(proba, valid=None):
    """Hard labels from responsibilities (argmax over components).

    Parameters
    ----------
    proba : (..., K) float ndarray
        Responsibilities (or any per-component scores); rows need not sum
        to 1. Ties go to the lower component index.
    valid : (...) bool ndarray, optional
        Pixels where this is False get label -1, whatever ``proba`` holds
        there (NaN is fine).

    Returns
    -------
    labels : (...) int32 ndarray
        Component index in ``0..K-1``, -1 where ``valid`` is False.

    Examples
    --------
    >>> proba = np.array([[[0.9, 0.1], [0.2, 0.8]]], dtype=np.float32)
    >>> labels_from_proba(proba, valid=np.array([[True, False]]))
    array([[ 0, -1]], dtype=int32)
    """
    proba = _as_proba(proba)
    spatial = proba.shape[:-1]
    valid = _as_mask(valid, spatial)
    flat = proba.reshape(-1, proba.shape[-1])
    labels = np.empty(flat.shape[0], dtype=np.int32)
    # argmax returns intp; blocks keep that int64 temporary small.
    for rows in _row_blocks(flat.shape[0], flat.shape[1]):
        labels[rows] = flat[rows].argmax(axis=1)
    labels = labels.reshape(spatial)
    if valid is not None:
        labels[~valid] = -1
    return labels


def normalized_entropy(proba, valid=None):
    """Posterior entropy of each pixel divided by its maximum, ``log K``.

    ``H = -sum_k p_k log p_k / log K`` is 0 where one component takes all
    the probability and 1 where all ``K`` are equally likely: a per-pixel
    measure of how unsure the segmentation is, highest on the borders
    between segments.

    Parameters
    ----------
    proba : (..., K) float ndarray
        Responsibilities; rows sum to 1.
    valid : (...) bool ndarray, optional
        Pixels where this is False get NaN.

    Returns
    -------
    entropy : (...) float32 ndarray
        In ``[0, 1]``; 0 everywhere (valid) when ``K == 1``.

    Examples
    --------
    >>> normalized_entropy(np.array([[1.0, 0.0], [0.5, 0.5]]))
    array([0., 1.], dtype=float32)
    """
    proba = _as_proba(proba)
    spatial = proba.shape[:-1]
    valid = _as_mask(valid, spatial)
    k = proba.shape[-1]
    flat = proba.reshape(-1, k)
    out = np.zeros(flat.shape[0], dtype=np.float32)
    if k > 1:
        scale = np.float32(1.0 / math.log(k))
        for rows in _row_blocks(flat.shape[0], k):
            block = special.entr(flat[rows].astype(np.float32, copy=False))
            out[rows] = block.sum(axis=1) * scale
        np.clip(out, 0.0, 1.0, out=out)
    out = out.reshape(spatial)
    if valid is not None:
        out[~valid] = np.nan
    return out


def scatter_valid(values, valid, fill):
    """Put per-valid-pixel values back on the pixel grid.

    Parameters
    ----------
    values : (n_valid, ...) ndarray
        One row per True pixel of ``valid``, in C order (the order of
        ``image[valid]``).
    valid : (...) bool ndarray
        The mask the rows were taken with.
    fill : scalar
        Value for pixels where ``valid`` is False, e.g. -1 for labels, 0 or
        NaN for probabilities. Must be representable in ``values.dtype``.

    Returns
    -------
    out : ndarray of shape ``valid.shape + values.shape[1:]``
        Same dtype as ``values``; a view of ``values`` when every pixel is
        valid.

    Examples
    --------
    >>> valid = np.array([[True, False], [True, True]])
    >>> scatter_valid(np.array([3, 4, 5], dtype=np.int32), valid, -1)
    array([[ 3, -1],
           [ 4,  5]], dtype=int32)
    """
    values = np.asarray(values)
    valid = np.asarray(valid)
    if valid.dtype != np.bool_:
        raise TypeError(f"valid must be a bool array, got dtype {valid.dtype}")
    n_valid = int(np.count_nonzero(valid))
    if values.ndim < 1 or values.shape[0] != n_valid:
        raise ValueError(
            f"values must have one row per valid pixel ({n_valid}), got shape {values.shape}"
        )
    _check_fill(fill, values.dtype)
    shape = valid.shape + values.shape[1:]
    if n_valid == valid.size:  # the common case: nothing to scatter
        return values.reshape(shape)
    out = np.full(shape, fill, dtype=values.dtype)
    # Integer indices along one flat axis are several times faster than a
    # multi-dimensional boolean mask with trailing dimensions.
    out.reshape((valid.size,) + values.shape[1:])[np.flatnonzero(valid)] = values
    return out


def _check_fill(fill, dtype):
    if dtype.kind in "iu":
        ok = isinstance(fill, (numbers.Integral, np.bool_)) or (
            isinstance(fill, numbers.Real) and math.isfinite(fill) and float(fill).is_integer()
        )
        if ok:
            info = np.iinfo(dtype)
            ok = info.min <= int(fill) <= info.max
        if not ok:
            raise ValueError(f"fill must be an integer that fits {dtype}, got {fill!r}")
    elif dtype.kind in "fc" and not isinstance(fill, numbers.Number):
        raise TypeError(f"fill must be a number for {dtype} values, got {fill!r}")


# ----------------------------------------------------------------------------
# small-region cleanup


def remove_small_regions(labels, min_size, *, connectivity=1):
    """Merge connected regions smaller than ``min_size`` into a neighbour.

    A region is a connected set of pixels with the same label. Each region
    of fewer than ``min_size`` pixels takes the label it shares the longest
    border with (the most neighbouring pixel pairs, counted over the
    ``connectivity`` neighbourhood; ties go to the lower label). A small
    region only joins a neighbour that is larger (or not small), so two
    small neighbours never swap labels; a chain of small regions takes the
    label of the region it ends in. Passes repeat until no small region can
    merge (a few passes in practice).

    Pixels labelled -1 never change and never absorb a region; a small
    region whose only neighbours are -1 pixels (or the image edge) stays.

    Parameters
    ----------
    labels : (H, W) or (Z, H, W) int ndarray
        Labels ``>= 0``, -1 for invalid pixels. Not modified.
    min_size : int
        Regions with fewer pixels than this are merged. 0 or 1 changes
        nothing.
    connectivity : int, default 1
        Neighbourhood as in ``scipy.ndimage.generate_binary_structure``:
        1 = faces (4-/6-connected), ``labels.ndim`` = all touching pixels.
        Regions come from ``skimage.measure.label``, in one pass whatever
        the number of labels.

    Returns
    -------
    cleaned : ndarray, same shape and dtype as ``labels``
        A new array.

    Examples
    --------
    >>> labels = np.zeros((5, 5), dtype=np.int32)
    >>> labels[2, 2] = 1
    >>> int(remove_small_regions(labels, 2).max())
    0
    """
    labels = _as_label_array(labels, "labels")
    min_size = _as_int(min_size, "min_size", minimum=0)
    connectivity = _as_int(connectivity, "connectivity", minimum=1)
    if connectivity > labels.ndim:
        raise ValueError(
            f"connectivity must be between 1 and labels.ndim ({labels.ndim}), got {connectivity}"
        )
    if min_size <= 1 or labels.size == 0:
        return labels.copy()
    regions, region_label = _remove_small(labels, min_size, connectivity)
    # Unsigned labels have no -1 pixels, so region 0 (label -1) never occurs.
    as_labels = np.maximum(region_label, 0) if labels.dtype.kind == "u" else region_label
    return regions.paint(as_labels.astype(labels.dtype))


def _remove_small(labels, min_size, connectivity):
    """:func:`remove_small_regions` on checked arguments, up to writing the map.

    Returns the cleaned map's connected regions (a :class:`._graph.RunRegions`
    or :class:`._graph.PixelRegions`, ids 1..R in raster order, 0 off the
    valid pixels) and each region's label (``region_label``, -1 for region
    0): the map is labelled once, each pass works out the new regions from
    the old ones, and the caller paints what it needs (labels, region ids).
    """
    regions, region_label = _graph._connected(labels, connectivity)
    if min_size <= 1 or labels.size == 0:
        return regions, region_label
    offsets = _half_offsets(labels.ndim, connectivity)
    for n_pass in range(1, _MAX_PASSES + 1):
        n_merged, small_left, regions, region_label = _merge_small_once(
            regions, region_label, min_size, offsets)
        logger.debug("remove_small_regions pass %d: merged %d regions", n_pass, n_merged)
        if n_merged == 0 or not small_left:
            break
    else:
        logger.info(
            "remove_small_regions stopped after %d passes; some regions below "
            "min_size=%d may remain",
            _MAX_PASSES,
            min_size,
        )
    return regions, region_label


def _merge_small_once(regions, region_label, min_size, offsets):
    """One merging pass over a map's connected regions (from :func:`._graph._connected`).

    Returns the count merged, whether a region under ``min_size`` may be
    left (if not, another pass has nothing to do), and the new map's
    ``regions`` and ``region_label``.

    Every small region points at one neighbouring region that carries its
    best label (longest total border) and is larger than it (size, then id),
    or is not small. Following the pointers leads to a region that stays;
    each tree of pointers takes that region's label. Pointers only go up in
    (size, id), so there are no cycles and no two regions swap labels; the
    smallest small region always merges, so every pass makes progress.
    """
    unchanged = regions, region_label
    n_nodes = region_label.size
    sizes = regions.sizes(n_nodes)
    small = sizes < min_size
    small[0] = False
    if not small.any():
        return 0, False, *unchanged

    # Touching regions with a small source: (small region, neighbour region)
    # and the pixel pairs along their border, from both sides.
    # (None: one pair each, for a map held as pixels.)
    src_parts, dst_parts, length_parts = [], [], []
    for offset in offsets:
        ra, rb, length = regions.borders(offset)
        sa, sb = small[ra], small[rb]
        src_parts += [ra[sa], rb[sb]]
        dst_parts += [rb[sa], ra[sb]]
        if length is not None:
            length_parts += [length[sa], length[sb]]
    # int64: region ids are squared into pair codes below.
    src = np.concatenate(src_parts).astype(np.int64, copy=False)
    if src.size == 0:
        return 0, True, *unchanged
    dst = np.concatenate(dst_parts).astype(np.int64, copy=False)
    length = np.concatenate(length_parts) if length_parts else None

    # Best label per small region: longest total border, ties to the lower
    # label. Labels are coded as small ints so (region, label) fits one int64.
    if region_label.max() < n_nodes:
        label_code = region_label
    else:
        label_code = np.unique(region_label, return_inverse=True)[1].reshape(-1)
    n_codes = int(label_code.max()) + 1
    dst_code = label_code[dst]
    best_code = np.full(n_nodes, -2, dtype=np.int64)
    n_small = int(np.count_nonzero(small))
    if n_small * n_codes <= src.size:
        # Dense (small region, label) table no larger than the pair list: no sort.
        rank = np.cumsum(small) - 1
        table = np.bincount(rank[src] * n_codes + dst_code, length, minlength=n_small * n_codes)
        best_code[small] = table.reshape(n_small, n_codes).argmax(axis=1)
    else:
        lab_keys, lab_border = _summed(src * n_codes + dst_code, length)
        lab_src, lab_code = np.divmod(lab_keys, n_codes)
        best_src, at = _first_max_per_group(lab_src, lab_border)
        best_code[best_src] = lab_code[at]

    # Target region: among neighbours with the best label that rank above the
    # source, the one with the longest border (ties to the lower id).
    position = np.empty(n_nodes, dtype=np.int64)
    position[np.lexsort((np.arange(n_nodes), sizes))] = np.arange(n_nodes)
    usable = dst_code == best_code[src]
    del dst_code
    usable &= ~small[dst] | (position[dst] > position[src])
    if not usable.any():
        return 0, True, *unchanged
    keys, border = _summed(src[usable] * n_nodes + dst[usable],
                           None if length is None else length[usable])
    del usable
    movers, at = _first_max_per_group(keys // n_nodes, border)
    targets = keys[at] % n_nodes

    pointer = np.arange(n_nodes, dtype=np.int64)
    pointer[movers] = targets
    while True:
        jumped = pointer[pointer]
        if np.array_equal(jumped, pointer):
            break
        pointer = jumped
    new_label = region_label[pointer]

    # The new map's regions are the old ones joined where they touch and now
    # share a label, worked out on the region graph (no labelling pass).
    # Only pairs with a small side can join: two touching regions that are
    # not small keep their labels, which differed.
    same = new_label[src] == new_label[dst]
    graph = sparse.csr_matrix((np.ones(int(same.sum()), bool), (src[same], dst[same])),
                              shape=(n_nodes, n_nodes))
    del same, src, dst
    n_joined, joined = csgraph.connected_components(graph, directed=False)
    # Old regions are numbered in raster order, so a new region starts where
    # its lowest-numbered old one does: number the new ones in that order.
    # Node 0 (the invalid pixels) touches nothing and stays 0.
    _, first = np.unique(joined, return_index=True)
    number = np.empty(n_joined, dtype=np.int32)
    number[np.argsort(first)] = np.arange(n_joined, dtype=np.int32)
    table = number[joined]
    joined_label = np.empty(n_joined, dtype=np.int64)
    joined_label[table] = new_label
    joined_size = np.bincount(table, sizes, minlength=n_joined)
    small_left = bool((joined_size[1:] < min_size).any())
    return int(movers.size), small_left, regions.relabel(table), joined_label


def _summed(keys, weights):
    """The distinct ``keys`` (sorted) and the sum of ``weights`` over each, int64
    (the count of each where ``weights`` is None)."""
    if weights is None:
        return np.unique(keys, return_counts=True)
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse.reshape(-1), weights).astype(np.int64)


def _first_max_per_group(groups, values):
    """Where ``values`` peaks first in each run of equal ``groups`` (sorted).

    Returns the group ids and, per group, the index of its first maximum.
    """
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    counts = np.diff(np.r_[starts, groups.size])
    peaks = np.flatnonzero(values == np.repeat(np.maximum.reduceat(values, starts), counts))
    peak_group = np.repeat(np.arange(starts.size), counts)[peaks]
    first = np.r_[True, peak_group[1:] != peak_group[:-1]]
    return groups[starts], peaks[first]
