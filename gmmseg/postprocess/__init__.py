"""From responsibilities to label maps, pictures and per-segment statistics.

Everything here is a function of arrays: responsibilities ``(..., K)``, label
maps ``(H, W)`` or ``(Z, H, W)`` (int, ``-1`` for invalid pixels) and image
data ``(..., C)``. Nothing here fits a model.

Float work on large images (stretching, blending, statistics, argmax) runs in
blocks of about a million pixels, so no full-size float64 temporary is made.
"""

import heapq
import itertools
import logging
import math
import numbers

import cv2
import numpy as np
from scipy import ndimage, sparse, special
from scipy.sparse import csgraph
from skimage import measure

__all__ = [
    "boundaries",
    "colormap",
    "display_rgb",
    "heat_map",
    "labels_from_proba",
    "normalized_entropy",
    "overlay",
    "pixel_counts",
    "RegionHierarchy",
    "region_hierarchy",
    "remove_small_regions",
    "scatter_valid",
    "segment_colors",
    "segment_stats",
]

logger = logging.getLogger(__name__)

# Pixels per block for chunked float work; bounds temporaries to a few MiB.
_BLOCK = 1 << 20

# Display percentiles are taken on a regular subsample of about this many pixels.
_PERCENTILE_SAMPLE = 1 << 20

#: Pieces smaller than this join a neighbour before regions are merged
#: (:func:`region_hierarchy`).
REGION_MIN_SIZE = 50
#: How much a strong edge between two regions delays their merging; of 0.5,
#: 1, 2, 4 and 8, 4 agreed best with people on 50 BSDS500 photos
#: (``docs/quality.md``, section 4).
REGION_BOUNDARY_WEIGHT = 4.0
#: Where :meth:`RegionHierarchy.cut` stops merging by default: at the first
#: merge that costs more than this share of the hierarchy's costliest merge
#: (one of the last, between the most different parts of the image), so
#: the cut does not depend on the image's size, contrast or units.  Chosen
#: on BSDS500 photos 1-50 (``docs/quality.md``, section 7).
REGION_SCALE = 0.005
#: Every region's covariance gets this share of each channel's variance over
#: the image (at least a thousandth of the largest channel's) on its
#: diagonal: a region of one flat colour has none, and small regions'
#: covariances are poor estimates (``docs/quality.md``, section 7).
REGION_RIDGE = 0.03
#: After a cut at a scale, regions under this share of the pixels join a
#: neighbour: on BSDS500 photos 1-50, 1% against 0.5% lowered VoI by 0.03
#: bits at the default scale and changed PRI by less than 0.001
#: (``docs/quality.md``, section 7).
REGION_MIN_SHARE = 0.01

# 2-D label maps with up to this many labels are split into regions by
# OpenCV, one label at a time; more labels (or volumes) by scikit-image.
_OPENCV_MAX_LABELS = 64

# Each pass of remove_small_regions merges at least one region, so this only
# bounds pathological inputs (long chains of ever larger small regions).
_MAX_PASSES = 50

# matplotlib's "tab10", the qualitative palette most readers know.
_TAB10 = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ],
    dtype=np.uint8,
)

# Anchor colours of the heat-map colormaps at 0, 1/8, ..., 1 (matplotlib's
# perceptually uniform "magma" and "viridis", and plain grey); colormap()
# interpolates them to 256 entries, so no plotting library is needed.
_COLORMAP_ANCHORS = {
    "magma": [(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122),
              (229, 80, 100), (251, 135, 97), (254, 194, 135), (252, 253, 191)],
    "viridis": [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}


# ----------------------------------------------------------------------------
# validation helpers


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
    return _remove_small(labels, min_size, connectivity)[0]


def _remove_small(labels, min_size, connectivity):
    """:func:`remove_small_regions` on checked arguments.

    Returns the cleaned map and its connected regions as
    :func:`_label_regions` gives them (``regions``, ``region_label``): the
    map is labelled once, and each pass works out the new regions from the
    old ones.
    """
    regions, region_label = _label_regions(labels, connectivity)
    if min_size <= 1 or labels.size == 0:
        return labels.copy(), regions, region_label
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
    # Unsigned labels have no -1 pixels, so region 0 (label -1) never occurs.
    as_labels = np.maximum(region_label, 0) if labels.dtype.kind == "u" else region_label
    return as_labels.astype(labels.dtype)[regions], regions, region_label


def _half_offsets(ndim, connectivity):
    """Neighbour offsets in one direction only (each pixel pair once)."""
    zero = (0,) * ndim
    return [
        off
        for off in itertools.product((-1, 0, 1), repeat=ndim)
        if off > zero and sum(map(abs, off)) <= connectivity
    ]


def _pair_slices(offset):
    """Slices ``(a, b)`` so that ``x[b]`` is the neighbour of ``x[a]`` at ``offset``."""
    a, b = [], []
    for d in offset:
        if d == 0:
            a.append(slice(None))
            b.append(slice(None))
        elif d > 0:
            a.append(slice(None, -1))
            b.append(slice(1, None))
        else:
            a.append(slice(1, None))
            b.append(slice(None, -1))
    return tuple(a), tuple(b)


def _label_regions(labels, connectivity):
    """Connected regions of equal label, in one pass whatever the number of labels.

    Returns ``regions`` (int32 or wider, 0 at -1 pixels, 1..R elsewhere;
    widen before squaring region counts) and ``region_label`` (int64,
    length R + 1, -1 at index 0).
    """
    n_labels = int(labels.max()) + 1 if labels.size else 0
    if labels.ndim == 2 and 0 < n_labels <= _OPENCV_MAX_LABELS:
        regions, n_regions = _label_regions_opencv(labels, n_labels, connectivity)
    else:
        if labels.dtype.kind == "u":
            # skimage needs a background value; unsigned labels have no -1 pixels.
            labels = labels.astype(np.int64)
        regions, n_regions = measure.label(
            labels, background=-1, connectivity=connectivity, return_num=True
        )
    # A region's label, read at the start of each run of one region (a
    # region is constant along runs, and runs are far fewer than pixels).
    flat = regions.reshape(-1)
    starts = _run_starts(flat)
    region_label = np.empty(n_regions + 1, dtype=np.int64)
    region_label[flat[starts]] = labels.reshape(-1)[starts]
    region_label[0] = -1
    return regions, region_label


def _label_regions_opencv(labels, n_labels, connectivity):
    """``skimage.measure.label(labels, background=-1)`` for a 2-D map of few
    labels, the same regions in the same (raster) order: OpenCV labels one
    label's pixels at a time, several times faster at millions of pixels."""
    ids, pieces, total = None, None, 0          # each label's regions after the last's
    is_value = np.empty(labels.shape, bool)
    mask = is_value.view(np.uint8)
    for value in range(n_labels):
        np.equal(labels, value, out=is_value)
        n, pieces = cv2.connectedComponents(mask, labels=pieces,
                                            connectivity=4 if connectivity == 1 else 8,
                                            ltype=cv2.CV_32S)
        if ids is None:         # label 0's regions (0 elsewhere) start the map
            ids, pieces = pieces, None
        else:
            np.add(pieces, total, out=pieces, where=is_value)
            cv2.add(ids, pieces, dst=ids)      # the labels' pixels do not overlap
        total += n - 1
    return _raster_rank(ids)[ids], total


def _merge_small_once(regions, region_label, min_size, offsets):
    """One merging pass over a map's connected regions (from :func:`_label_regions`).

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
    flat = regions.reshape(-1)
    starts = _run_starts(flat)                  # count runs, not pixels
    sizes = np.bincount(flat[starts], _run_lengths(starts, flat.size),
                        minlength=n_nodes).astype(np.int64)
    del flat, starts
    small = sizes < min_size
    small[0] = False
    if not small.any():
        return 0, False, *unchanged

    # Neighbouring pixel pairs in different valid regions with a small
    # source: (small region, neighbour region), each border pair counted.
    src_parts, dst_parts = [], []
    for offset in offsets:
        sl_a, sl_b = _pair_slices(offset)
        a, b = regions[sl_a], regions[sl_b]
        differ = a != b
        ra, rb = a[differ], b[differ]
        both_valid = (ra > 0) & (rb > 0)
        ra, rb = ra[both_valid], rb[both_valid]
        sa, sb = small[ra], small[rb]
        src_parts += [ra[sa], rb[sb]]
        dst_parts += [rb[sa], ra[sb]]
    # int64: region ids are squared into pair codes below.
    src = np.concatenate(src_parts).astype(np.int64, copy=False)
    if src.size == 0:
        return 0, True, *unchanged
    dst = np.concatenate(dst_parts).astype(np.int64, copy=False)

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
        table = np.bincount(rank[src] * n_codes + dst_code, minlength=n_small * n_codes)
        best_code[small] = table.reshape(n_small, n_codes).argmax(axis=1)
    else:
        lab_keys, lab_border = np.unique(src * n_codes + dst_code, return_counts=True)
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
    keys, border = np.unique(src[usable] * n_nodes + dst[usable], return_counts=True)
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
    new_regions = table[regions]
    joined_label = np.empty(n_joined, dtype=np.int64)
    joined_label[table] = new_label
    joined_size = np.bincount(table, sizes, minlength=n_joined)
    small_left = bool((joined_size[1:] < min_size).any())
    return int(movers.size), small_left, new_regions, joined_label


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


# ----------------------------------------------------------------------------
# pictures


class RegionHierarchy:
    """Connected regions of a label map and the order in which they merge.

    Made by :func:`region_hierarchy`; :meth:`cut` gives the segmentation
    with any number of regions, all from one merging pass.

    Attributes
    ----------
    regions : ndarray of int32, the label map's shape
        The finest level: connected regions ``0 .. n_regions - 1`` numbered
        in raster order of their first pixel, -1 where the label map is -1
        (and on isolated specks, see :func:`region_hierarchy`).
    n_regions : int
        Number of regions at the finest level.
    merges : (M, 2) ndarray of int
        Region ids (finest level) of each merge in order: the second region
        joins the first.  Merging stops when no two regions touch, so a
        label map in several separate parts keeps one region per part.
    costs : (M,) ndarray of float
        The merge criterion of each merge (see :func:`region_hierarchy`).
    scales : (M,) ndarray of float
        The scale at which each merge happens: the highest cost so far
        divided by the highest cost of all, so that it does not depend on
        the image's size or contrast (non-decreasing, the last 1; all 0 if
        every merge is free; see :meth:`cut`).
    """

    def __init__(self, regions, merges, costs, sizes=None, borders=None):
        self.regions = regions
        self.n_regions = int(regions.max()) + 1 if regions.size else 0
        self.merges = merges
        self.costs = costs
        # Pixels per finest region and {(a, b): touching pixel pairs} between
        # them: what dropping small regions after a cut needs.
        self._sizes = pixel_counts(regions, self.n_regions) if sizes is None else np.asarray(sizes)
        self._borders = {} if borders is None else borders
        highest = np.maximum.accumulate(costs) if len(costs) else np.zeros(0)
        self.scales = (highest / highest[-1] if len(costs) and highest[-1] > 0
                       else np.zeros_like(highest))

    @property
    def min_regions(self):
        """The fewest regions a cut can give (one per separate part)."""
        return self.n_regions - len(self.merges)

    def cut(self, n_regions=None, *, scale=None, min_share=REGION_MIN_SHARE):
        """The segmentation with ``n_regions`` regions, or at a ``scale``.

        Give one of the two.  A number of regions is the same for every
        image; a scale lets each image have as many regions as it shows:
        merging stops at the first merge whose cost, as a share of the
        costliest merge (:attr:`scales`), exceeds ``scale``, and then
        regions smaller than ``min_share`` of the pixels join the neighbour
        they share the longest border with, smallest first (a strong edge
        can keep a speck apart at any scale).  On BSDS500 photos a scale
        agrees better with people than any fixed number of regions
        (``docs/quality.md``, sections 6 and 7).

        Parameters
        ----------
        n_regions : int, optional
            Wanted number of regions, >= 1; clipped to
            ``[min_regions, n_regions]``.
        scale : float, optional
            Merge cost at which to stop, as a share of the costliest merge,
            in ``[0, 1]``: 0 makes only the merges that cost nothing, 1 all
            of them (:data:`REGION_SCALE` is 0.005).
        min_share : float, default :data:`REGION_MIN_SHARE` (0.01)
            With ``scale``: the smallest region, as a share of the pixels in
            regions; 0 keeps every region.

        Returns
        -------
        ndarray of int32, the label map's shape
            Regions ``0 .. n - 1`` numbered in raster order of their first
            pixel; -1 where :attr:`regions` is -1.
        """
        if (n_regions is None) == (scale is None):
            raise ValueError("give either n_regions or scale")
        if scale is None:
            n_regions = _as_int(n_regions, "n_regions", minimum=1)
            n_merges = min(len(self.merges), max(0, self.n_regions - n_regions))
        else:
            if not (isinstance(scale, numbers.Real) and 0 <= scale <= 1):
                raise ValueError(f"scale must be a number in [0, 1] (a share of the "
                                 f"costliest merge), got {scale!r}")
            n_merges = int(np.searchsorted(self.scales, scale, side="right"))
            if not (isinstance(min_share, numbers.Real) and 0 <= min_share < 1):
                raise ValueError(f"min_share must be a number in [0, 1), got {min_share!r}")
        if self.n_regions == 0:
            return np.full(self.regions.shape, -1, dtype=np.int32)
        parent = np.arange(self.n_regions)
        for kept, absorbed in self.merges[:n_merges]:
            parent[absorbed] = kept
        while True:  # point every region at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        if scale is not None:
            smallest = int(min_share * self._sizes.sum())
            if smallest > 1:
                parent = self._absorb_small(parent, smallest)
        # The finest regions are numbered in raster order, so a merged
        # region's first pixel is that of its smallest member.
        first = np.full(self.n_regions, self.n_regions, dtype=np.int64)
        np.minimum.at(first, parent, np.arange(self.n_regions))
        roots = np.flatnonzero(first < self.n_regions)
        rank = np.empty(self.n_regions, dtype=np.int32)
        rank[roots[np.argsort(first[roots], kind="stable")]] = np.arange(
            len(roots), dtype=np.int32)
        # One lookup per pixel; the table's last entry, -1, serves index -1.
        table = np.append(rank[parent], np.int32(-1))
        return table[self.regions]

    def _absorb_small(self, root, smallest):
        """Regions (given as each finest region's root) under ``smallest``
        pixels join the neighbour they share the longest border with,
        smallest first (ties: lower id), on the region graph: no pixel is read."""
        sizes = np.bincount(root, weights=self._sizes, minlength=self.n_regions)
        border = {}
        for (a, b), length in self._borders.items():
            ra, rb = int(root[a]), int(root[b])
            if ra != rb:
                border.setdefault(ra, {})
                border.setdefault(rb, {})
                border[ra][rb] = border[ra].get(rb, 0) + length
                border[rb][ra] = border[ra][rb]
        heap = [(sizes[r], r) for r in np.unique(root) if sizes[r] < smallest]
        heapq.heapify(heap)
        into = {}
        while heap:
            size, r = heapq.heappop(heap)
            if r in into or size != sizes[r] or not border.get(r):
                continue  # merged, grown since (a newer entry exists) or isolated
            target = max(border[r], key=lambda v: (border[r][v], -v))
            into[r] = target
            sizes[target] += sizes[r]
            for v, length in border.pop(r).items():
                del border[v][r]
                if v != target:
                    border[target][v] = border[target].get(v, 0) + length
                    border[v][target] = border[target][v]
            if sizes[target] < smallest:
                heapq.heappush(heap, (sizes[target], target))
        if not into:
            return root
        final = np.arange(self.n_regions)
        for r in into:                      # follow each chain to a region that stays
            t = into[r]
            while t in into:
                t = into[t]
            final[r] = t
        return final[root]


def region_hierarchy(labels, values, *, min_size=REGION_MIN_SIZE,
                     boundary_weight=REGION_BOUNDARY_WEIGHT, spacing=None):
    """Split a label map into connected regions and merge them, most alike first.

    A mixture label is a class that may cover many separate pieces of an
    image; people draw connected regions.  This turns the first into the
    second: pieces under ``min_size`` pixels join a neighbour
    (:func:`remove_small_regions`), every label is split into its connected
    regions (pixels sharing a face: 4-connected in 2-D, 6-connected in 3-D),
    and touching regions (faces, edges or corners) are merged greedily,
    cheapest first.  Each region is modelled as a Gaussian of its
    ``values`` (mean and covariance, with :data:`REGION_RIDGE` times each
    channel's variance over the image, at least a thousandth of the largest
    channel's, added on the diagonal), and merging
    two costs the log-likelihood the pair loses when one Gaussian models
    both, ``(n_ab log|S_ab| - n_a log|S_a| - n_b log|S_b|) / 2``, times
    ``(1 + g / g_mean) ** boundary_weight``, where ``g`` is the mean
    gradient magnitude of the (Gaussian-smoothed) ``values`` along the
    shared border and ``g_mean`` its mean over the image: regions split by a
    strong edge merge last.  Unlike Ward's criterion (the same with one
    fixed covariance for all), a region's own spread counts: two pieces of
    one texture (gravel, ripples) merge sooner than a textured and a flat
    piece of the same mean colour, and the cost does not depend on the
    channels' units.  With a cut relative to the costliest merge
    (:meth:`RegionHierarchy.cut`), the photo defaults built on it agree
    better with people's segmentations of 100 BSDS500 photos than those
    built on Ward's criterion, on all three metrics (``docs/quality.md``,
    section 7).

    A speck smaller than ``min_size`` that touches no other region (walled
    in by invalid pixels) belongs to no region: it is -1 in the result, so
    that it does not take one of the regions a cut asks for.

    Parameters
    ----------
    labels : (H, W) or (Z, H, W) int ndarray
        Labels >= 0, -1 for invalid pixels (never part of a region).
    values : ndarray of shape ``labels.shape + (C,)`` or ``labels.shape``
        What the regions look like, e.g. Lab colour.  The merge cost does
        not depend on the channels' units, but the edge term sums the
        channels' gradients: give them comparable scales.  Values at
        invalid pixels are ignored (they may be NaN).
    min_size : int, default 50
        Pieces with fewer pixels first join a neighbouring label.
    boundary_weight : float, default 4
        Exponent of the border term; 0 merges by colour alone.
    spacing : sequence of float, optional
        Physical pixel size per axis: the smoothing (sigma 1 of the finest
        spacing) and the gradient are taken in physical units.

    Returns
    -------
    RegionHierarchy

    Examples
    --------
    >>> labels = np.zeros((6, 9), dtype=np.int32)
    >>> labels[:, 3:6] = 1                       # label 0 in two separate pieces
    >>> values = np.where(labels == 1, 1.0, 0.0)
    >>> values[:, 6:] = 0.8                      # the right piece close to the middle
    >>> h = region_hierarchy(labels, values, min_size=0)
    >>> h.n_regions, h.min_regions
    (3, 1)
    >>> h.cut(3)[0].tolist(), h.cut(2)[0].tolist(), h.cut(1)[0].tolist()
    ([0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0])
    """
    labels = _as_label_array(labels, "labels")
    values = np.asarray(values, dtype=np.float32)
    if values.shape == labels.shape:
        values = values[..., np.newaxis]
    if values.shape[:-1] != labels.shape:
        raise ValueError(f"values must have shape {labels.shape} or {labels.shape} + (C,), "
                         f"got {values.shape}")
    _check_real(values, "values")
    min_size = _as_int(min_size, "min_size", minimum=0)
    if not (isinstance(boundary_weight, numbers.Real) and boundary_weight >= 0):
        raise ValueError(f"boundary_weight must be a number >= 0, got {boundary_weight!r}")
    spacing = np.ones(labels.ndim) if spacing is None else np.asarray(spacing, float)
    if spacing.shape != (labels.ndim,) or not np.all(spacing > 0):
        raise ValueError(f"spacing must hold {labels.ndim} positive numbers, got {spacing}")
    # The cleanup's face-connected regions are the finest level (no second
    # labelling pass); pieces of a label touching at a corner look alike and
    # merge first (with 8-connected pieces, the same scores on BSDS500).
    regions = _remove_small(labels, min_size, 1)[1]
    # Already in raster order; 0 (invalid) becomes -1.
    regions = np.subtract(regions, 1, out=np.empty(labels.shape, np.int32), casting="unsafe")
    if min_size > 1 and (regions.max(initial=-1) == 0 or (regions < 0).any()):
        # Isolated specks (nothing to merge with, so no region) need invalid
        # pixels around them, or an image of one small region.
        count = pixel_counts(regions)
        touching = np.zeros(len(count), dtype=bool)
        touching[_touching_pairs(regions).ravel()] = True
        speck = (count < min_size) & ~touching
        if speck.any():
            new_id = np.where(speck, -1, np.arange(len(count)))
            regions = _raster_order(np.where(regions >= 0, new_id[np.maximum(regions, 0)], -1))
    n = int(regions.max()) + 1 if regions.size else 0
    if n == 0:
        return RegionHierarchy(regions, np.zeros((0, 2), np.int64), np.zeros(0))
    inside = regions >= 0
    count, sums, squares = _region_moments(regions, values, n)
    # The ridge: a share of each channel's variance over the image, so that
    # the criterion does not depend on the channels' units; at least a
    # thousandth of the largest, so that a (nearly) constant channel --
    # a* and b* of a grey photo stored as RGB -- adds rounding noise, not
    # weight.
    mean = sums.sum(axis=0) / count.sum()
    variance = np.maximum(np.diagonal(squares.sum(axis=0)) / count.sum() - mean * mean, 0.0)
    floor = max(1e-3 * float(variance.max()), np.finfo(np.float32).tiny)
    ridge = REGION_RIDGE * np.maximum(variance, floor)
    edge = _edge_strength(values, inside, spacing)
    borders = _borders(regions, edge)
    lengths = {pair: border[0] for pair, border in borders.items()}  # merging edits borders
    return RegionHierarchy(regions, *_gaussian_merges(count, sums, squares, borders,
                                                      float(boundary_weight), ridge),
                           sizes=count, borders=lengths)


def _region_moments(regions, values, n):
    """Pixels per region and the sums of ``values`` (``(..., C)``) and of their
    outer products over each: ``count (n,)``, ``sums (n, C)``, ``squares
    (n, C, C)``, float64, all about a rough mean of the valid values (a
    covariance does not depend on the origin, and ``E[x x'] - E[x] E[x]'``
    then does not cancel for channels with a large offset).

    Regions are constant along runs of pixels, and runs are far fewer than
    pixels: values are summed per run (a contiguous slice) and the runs per
    region, several times faster than per-pixel weighted counts.
    """
    flat = regions.reshape(-1)
    rows = values.reshape(flat.size, -1)
    n_channels = rows.shape[1]
    sample = slice(None, None, max(1, flat.size // 4096))
    origin = rows[sample][flat[sample] >= 0].mean(axis=0, dtype=np.float64)
    origin = np.nan_to_num(origin)      # (no valid pixel sampled)
    upper = np.triu_indices(n_channels)
    # Runs are also cut where blocks start, so each block of pixels is summed
    # on its own, as channel rows of float64 that stay in the cache.
    n_sums = n_channels + len(upper[0])
    block = 1 << 16
    starts = np.union1d(_run_starts(flat), np.arange(0, flat.size, block))
    run_sums = np.empty((starts.size, n_sums))
    buffer = np.empty((n_sums, min(block, flat.size)))
    for first in range(0, flat.size, block):
        a, b = np.searchsorted(starts, [first, first + block])
        part = buffer[:, :min(block, flat.size - first)]
        np.subtract(rows[first:first + block].T, origin[:, None], out=part[:n_channels])
        for c, (i, j) in enumerate(zip(*upper)):
            np.multiply(part[i], part[j], out=part[n_channels + c])
        run_sums[a:b] = np.add.reduceat(part, starts[a:b] - first, axis=1).T
    bins = flat[starts].astype(np.intp) + 1       # bin 0 collects the invalid pixels
    count = np.bincount(bins, _run_lengths(starts, flat.size), minlength=n + 1)[1:]
    totals = np.stack([np.bincount(bins, run_sums[:, c], minlength=n + 1)[1:]
                       for c in range(run_sums.shape[1])], axis=1)
    squares = np.empty((n, n_channels, n_channels))
    squares[:, upper[0], upper[1]] = totals[:, n_channels:]
    squares[:, upper[1], upper[0]] = totals[:, n_channels:]
    return count, totals[:, :n_channels], squares


def _run_starts(flat):
    """Indices where a run of equal values starts in a 1-D array."""
    if flat.size == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))


def _run_lengths(starts, size):
    """Length of each run, given the run starts of a 1-D array of ``size``."""
    return np.diff(np.append(starts, size))


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


def _raster_order(regions):
    """Renumber regions (>= 0; -1 kept) 0..R-1 in raster order of their first pixel."""
    shifted = regions.astype(np.int32, copy=False) + np.int32(1)   # -1 -> 0
    return _raster_rank(shifted)[shifted] - np.int32(1)


def _raster_rank(ids):
    """Lookup table: region id (> 0; 0 = none) -> 1..R in raster order of its
    first pixel, 0 -> 0 (for ``table[ids]``)."""
    flat = ids.reshape(-1)
    if flat.size == 0:
        return np.zeros(1, dtype=np.int32)
    # A region first appears at the start of a run of equal values, and runs
    # are far fewer than pixels: sort those, not the pixels.
    starts = _run_starts(flat)
    run_ids = flat[starts]
    keep = run_ids > 0
    present, first_run = np.unique(run_ids[keep], return_index=True)
    table = np.zeros(int(present.max()) + 1 if present.size else 1, dtype=np.int32)
    order = np.argsort(starts[keep][first_run], kind="stable")
    table[present[order]] = np.arange(1, len(present) + 1, dtype=np.int32)
    return table


def _neighbour_pairs(regions):
    """For each neighbour direction (faces, edges and corners, as regions are
    connected): flat indices ``(ia, ib)`` of the pixel pairs in different
    regions, both valid.  Borders are a small share of the pixels, so only
    the inequality test runs over the whole image."""
    regions = np.ascontiguousarray(regions)
    flat = regions.reshape(-1)
    steps = np.cumprod((1,) + regions.shape[:0:-1])[::-1]    # flat index step per axis
    for offset in _half_offsets(regions.ndim, regions.ndim):
        sa, sb = _pair_slices(offset)
        where = np.nonzero(regions[sa] != regions[sb])
        ia = sum((c + (s.start or 0)) * step for c, s, step in zip(where, sa, steps))
        ib = ia + int(np.dot(offset, steps))
        ra, rb = flat[ia], flat[ib]
        valid = (ra >= 0) & (rb >= 0)
        yield ia[valid], ib[valid]


def _touching_pairs(regions):
    """``(P, 2)`` region ids of neighbouring pixel pairs in different regions."""
    flat = regions.reshape(-1)
    return np.concatenate([np.stack([flat[ia], flat[ib]], axis=1)
                           for ia, ib in _neighbour_pairs(regions)])


def _edge_strength(values, inside, spacing):
    """Gradient magnitude of the Gaussian-smoothed values, relative to its mean inside.

    Invalid pixels take the value of the nearest valid one first, so a hole
    in the image does not draw edges around itself.
    """
    if not inside.all():
        nearest = ndimage.distance_transform_edt(~inside, return_distances=False,
                                                 return_indices=True)
        values = values[tuple(nearest)]
    total = _squared_gradient(values, spacing / spacing.min())
    np.sqrt(total, out=total)
    mean = float(total.mean(dtype=np.float64, where=inside)) if inside.any() else 0.0
    if mean > 0:
        total /= np.float32(mean)
    return total


def _squared_gradient(values, spacing):
    """Squared central differences (per unit of ``spacing``) of ``values``
    (channels last) smoothed at sigma 1 of the finest spacing, summed over
    axes and channels, float32.  One channel at a time (a few image-sized
    float32 arrays at once); OpenCV for 2-D images (several times faster
    than scipy there), scipy for volumes."""
    if values.ndim == 3:
        # The same buffers for every channel: fresh image-sized arrays cost
        # page faults, a large share of the time at millions of pixels.
        total, channel, smooth, derivative = (
            np.empty(values.shape[:-1], np.float32) for _ in range(4))
        step = np.array([[-0.5, 0.0, 0.5]], np.float32)
        kernels = (step.T / np.float32(spacing[0]), step / np.float32(spacing[1]))
        for c in range(values.shape[-1]):
            np.copyto(channel, values[..., c], casting="unsafe")
            cv2.GaussianBlur(channel, (0, 0), dst=smooth, sigmaX=1.0 / spacing[1],
                             sigmaY=1.0 / spacing[0], borderType=cv2.BORDER_REPLICATE)
            for k, kernel in enumerate(kernels):
                cv2.filter2D(smooth, -1, kernel, dst=derivative, borderType=cv2.BORDER_REPLICATE)
                if c == k == 0:                 # the first term starts the sum
                    cv2.multiply(derivative, derivative, dst=total)
                else:
                    cv2.multiply(derivative, derivative, dst=derivative)
                    cv2.add(total, derivative, dst=total)
        return total
    total = np.zeros(values.shape[:-1], np.float32)
    axes = [a for a, n in enumerate(total.shape) if n > 1]   # one slice: no change along it
    for c in range(values.shape[-1] if axes else 0):
        smooth = ndimage.gaussian_filter(values[..., c].astype(np.float32, copy=False),
                                         sigma=1.0 / spacing, mode="nearest")
        derivatives = np.gradient(smooth, *spacing[axes], axis=axes)
        for derivative in derivatives if len(axes) > 1 else [derivatives]:
            total += derivative * derivative
    return total


def _borders(regions, edge):
    """``{(a, b): [pixel pairs, summed edge strength]}`` for neighbouring regions ``a < b``."""
    n = int(regions.max()) + 1
    flat, edge = regions.reshape(-1), edge.reshape(-1)
    keys, strength = [], []
    for ia, ib in _neighbour_pairs(regions):
        a, b = flat[ia].astype(np.int64), flat[ib].astype(np.int64)
        keys.append(np.minimum(a, b) * n + np.maximum(a, b))
        strength.append(np.maximum(edge[ia], edge[ib]))
    keys, strength = np.concatenate(keys), np.concatenate(strength)
    # Pixel pairs along a border come in runs of one key: sort the runs only.
    starts = _run_starts(keys)
    unique, inverse = np.unique(keys[starts], return_inverse=True)
    length = np.bincount(inverse, _run_lengths(starts, keys.size)).astype(int).tolist()
    total = np.bincount(inverse, np.add.reduceat(strength, starts, dtype=np.float64)).tolist()
    return {(int(k // n), int(k % n)): [l, t] for k, l, t in zip(unique, length, total)}


def _gaussian_merges(count, sums, squares, borders, weight, ridge):
    """Greedy merging of adjacent regions, cheapest first.

    A region is a Gaussian: its pixels' mean and covariance (plus ``ridge``,
    ``(C,)``, on the diagonal).  Merging ``a`` and ``b`` costs the fall in
    log-likelihood when one Gaussian models both,
    ``(n_ab log|S_ab| - n_a log|S_a| - n_b log|S_b|) / 2``, times the
    border term ``(1 + mean edge strength on the border) ** weight``.

    The heap holds one entry per region: its cheapest neighbour.  A merge
    changes only the costs of pairs with the merged region, whose entry is
    recomputed at once; an entry of another region that points at a region
    since merged is recomputed when it comes up.  So every pop that is still
    current is the cheapest pair overall, and a region bordering thousands
    of others (a background) does not refill the heap at every merge.
    """
    neighbours = {}
    for (a, b), border in borders.items():
        neighbours.setdefault(a, {})[b] = border
        neighbours.setdefault(b, {})[a] = border
    count = np.asarray(count, dtype=np.float64).copy()
    sums, squares = sums.copy(), squares.copy()
    ridge = np.diag(ridge)

    def log_det(n, s1, s2):
        """log-determinant of the ridged covariance of pixels with these sums."""
        mean = s1 / n[..., None]
        cov = s2 / n[..., None, None] - mean[..., :, None] * mean[..., None, :]
        return np.linalg.slogdet(cov + ridge)[1]

    own = count * log_det(count, sums, squares)     # n log|S| of each region
    version = [0] * len(count)
    alive = [True] * len(count)

    def entry(a):
        """``a``'s cheapest neighbour as a heap entry (ties: the lower id)."""
        others = np.fromiter(neighbours[a], dtype=np.int64, count=len(neighbours[a]))
        border = np.array(list(neighbours[a].values()))     # (d, 2): length, strength
        n = count[a] + count[others]
        joined = n * log_det(n, sums[a] + sums[others], squares[a] + squares[others])
        # The ridge keeps this >= 0 up to rounding.
        loss = np.maximum(0.5 * (joined - own[a] - own[others]), 0.0)
        costs = loss * (1.0 + border[:, 1] / border[:, 0]) ** weight
        best = int(np.lexsort((others, costs))[0])
        b = int(others[best])
        return float(costs[best]), a, b, version[a], version[b]

    heap = [entry(a) for a in neighbours if neighbours[a]]
    heapq.heapify(heap)
    merges, costs = [], []
    while heap:
        c, a, b, va, vb = heapq.heappop(heap)
        if not alive[a] or version[a] != va:
            continue  # a newer entry of ``a`` is in the heap
        if not alive[b] or version[b] != vb:
            if neighbours[a]:  # ``b`` merged or changed since: look again
                heapq.heappush(heap, entry(a))
            continue
        merges.append((a, b))
        costs.append(c)
        alive[b] = False
        count[a] += count[b]
        sums[a] += sums[b]
        squares[a] += squares[b]
        own[a] = count[a] * log_det(count[a:a + 1], sums[a:a + 1], squares[a:a + 1])[0]
        for other, border in neighbours.pop(b).items():
            del neighbours[other][b]
            if other == a:
                continue
            if other in neighbours[a]:
                neighbours[a][other][0] += border[0]
                neighbours[a][other][1] += border[1]
            else:
                neighbours[a][other] = border
            neighbours[other][a] = neighbours[a][other]
        version[a] += 1
        if neighbours[a]:
            heapq.heappush(heap, entry(a))
    return np.array(merges, dtype=np.int64).reshape(-1, 2), np.array(costs)


def display_rgb(data, valid=None, *, bands=None, percentiles=(2, 98)):
    """An 8-bit RGB picture of any image, for looking at (not for analysis).

    - uint8 data is used as is (no rescaling); uint8 RGB comes back equal.
    - Other dtypes (16-bit, signed, float) are stretched per channel: the
      ``percentiles`` of the valid, finite pixels map to 0 and 255, values
      outside are clipped. For large images the percentiles are taken on a
      regular subsample of about a million pixels.
    - bool data maps to 0 and 255.
    - One channel (or two: the first is used) is shown as grey; three or more
      use ``bands`` or the first three channels as R, G, B.
    - Invalid pixels (``valid`` False) and non-finite values are black.

    Parameters
    ----------
    data : (H, W, C) or (H, W) ndarray
        Image data as stored. For a volume pass one slice.
    valid : (H, W) bool ndarray, optional
        Pixels to show and to take the percentiles over.
    bands : sequence of 1 or 3 int, optional
        Channel indices to show as grey (1) or as R, G, B (3), e.g.
        ``(3, 2, 1)`` for a true-colour view of a multi-band scene.
    percentiles : (float, float), default (2, 98)
        Lower and upper percentile for the stretch, ``0 <= low < high <= 100``.

    Returns
    -------
    rgb : (H, W, 3) uint8 ndarray
        A new array.

    Examples
    --------
    >>> grey = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    >>> display_rgb(grey, percentiles=(0, 100))[..., 0]
    array([[  0,  64],
           [128, 255]], dtype=uint8)
    """
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3 or data.shape[-1] < 1:
        raise ValueError(
            "data must be (H, W, C) or (H, W); for a volume pass one slice, "
            f"got shape {data.shape}"
        )
    _check_real(data, "data")
    height, width, n_channels = data.shape
    valid = _as_mask(valid, (height, width))
    low, high = _check_percentiles(percentiles)

    if bands is None:
        bands = (0, 1, 2) if n_channels >= 3 else (0,)
    else:
        bands = tuple(bands)
        if len(bands) not in (1, 3) or not all(
            isinstance(b, numbers.Integral) and not isinstance(b, bool) and 0 <= b < n_channels
            for b in bands
        ):
            raise ValueError(
                f"bands must be 1 or 3 channel indices in 0..{n_channels - 1}, got {bands!r}"
            )

    out = np.empty((height, width, 3), dtype=np.uint8)
    if len(bands) == 1:
        out[...] = _channel_to_uint8(data[..., bands[0]], valid, low, high)[..., np.newaxis]
    else:
        for j, band in enumerate(bands):
            out[..., j] = _channel_to_uint8(data[..., band], valid, low, high)
    if valid is not None:
        out[~valid] = 0
    return out


def _check_percentiles(percentiles):
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError) as err:
        raise TypeError(f"percentiles must be two numbers, got {percentiles!r}") from err
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    return low, high


def _channel_to_uint8(channel, valid, low, high):
    """One (H, W) channel to uint8: as is for uint8, 0/255 for bool, else stretched."""
    if channel.dtype == np.uint8:
        return channel
    if channel.dtype == np.bool_:
        return channel.view(np.uint8) * np.uint8(255)
    lo, hi = _stretch_range(channel, valid, low, high)
    scale = 255.0 / (hi - lo)
    out = np.empty(channel.shape, dtype=np.uint8)
    for rows in _row_blocks(channel.shape[0], channel.shape[1]):
        # float64 per block: exact for every integer dtype and float range.
        with np.errstate(invalid="ignore", over="ignore"):
            block = (channel[rows].astype(np.float64) - lo) * scale
        np.clip(block, 0.0, 255.0, out=block)
        np.nan_to_num(block, copy=False, nan=0.0)
        np.rint(block, out=block)
        out[rows] = block
    return out


def _stretch_range(channel, valid, low, high):
    """Percentiles of the valid finite values, on a subsample of ~1e6 pixels."""
    step = max(1, math.ceil(math.sqrt(channel.size / _PERCENTILE_SAMPLE)))
    while True:
        sub = channel[::step, ::step]
        values = sub[valid[::step, ::step]] if valid is not None else sub.ravel()
        if values.dtype.kind == "f":
            values = values[np.isfinite(values)]
        # A sparse valid mask can be missed by the subsample; retry on all pixels.
        if values.size or step == 1:
            break
        step = 1
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, (low, high)))
    if not hi > lo:
        # Constant channel: show the common value as black, anything above as bright.
        hi = lo + 1.0
    return lo, hi


def colormap(name="magma"):
    """A 256-entry RGB colour table, dark (0) to bright (255).

    Parameters
    ----------
    name : {"magma", "viridis", "gray"}
        "magma" and "viridis" follow matplotlib's perceptually uniform
        maps of those names (interpolated from nine anchor colours).

    Returns
    -------
    table : (256, 3) uint8 ndarray

    Examples
    --------
    >>> colormap("gray")[[0, 128, 255], 0]
    array([  0, 128, 255], dtype=uint8)
    """
    if name not in _COLORMAP_ANCHORS:
        raise ValueError(f"name must be one of {tuple(_COLORMAP_ANCHORS)}, got {name!r}")
    anchors = np.asarray(_COLORMAP_ANCHORS[name], dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(t, at, anchors[:, j]) for j in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


def heat_map(values, valid=None, *, value_range=None, percentiles=(1, 99.5), cmap="magma"):
    """A scalar map as a colour picture: low values dark, high values bright.

    Parameters
    ----------
    values : (H, W) real ndarray
        For a volume pass one slice.
    valid : (H, W) bool ndarray, optional
        Pixels to show; the others, and non-finite values, are black.
    value_range : (float, float), optional
        Values mapped to the first and last colour (clipped outside).
        Default: the ``percentiles`` of the valid finite values, which
        keeps a few extreme pixels from washing out the rest.
    percentiles : (float, float), default (1, 99.5)
    cmap : {"magma", "viridis", "gray"}, default "magma"
        See :func:`colormap`.

    Returns
    -------
    picture : (H, W, 3) uint8 ndarray

    Examples
    --------
    >>> heat_map(np.array([[0.0, 1.0]]), value_range=(0, 1), cmap="gray")[..., 0]
    array([[  0, 255]], dtype=uint8)
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be (H, W); for a volume pass one slice, got {values.shape}")
    _check_real(values, "values")
    valid = _as_mask(valid, values.shape)
    table = colormap(cmap)
    if value_range is None:
        lo, hi = _stretch_range(values, valid, *_check_percentiles(percentiles))
    else:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError) as err:
            raise TypeError(f"value_range must be two numbers, got {value_range!r}") from err
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"value_range must be finite with low < high, got {value_range!r}")
    scale = 255.0 / (hi - lo)
    out = np.zeros(values.shape + (3,), dtype=np.uint8)
    for rows in _row_blocks(values.shape[0], values.shape[1]):
        with np.errstate(invalid="ignore", over="ignore"):
            block = (values[rows].astype(np.float64) - lo) * scale
        shown = np.isfinite(block)
        if valid is not None:
            shown &= valid[rows]
        index = np.rint(np.clip(np.where(shown, block, 0.0), 0.0, 255.0)).astype(np.intp)
        out[rows] = np.where(shown[..., None], table[index], 0)
    return out


def segment_colors(n):
    """A fixed palette of ``n`` distinct colours for segment labels.

    The first ten are matplotlib's "tab10"; later ones step around the hue
    circle by the golden angle with cycling saturation and value, so every
    row differs for ``n`` up to at least 3000. Same ``n``, same colours.

    Parameters
    ----------
    n : int
        Number of colours, ``>= 0``.

    Returns
    -------
    colors : (n, 3) uint8 ndarray
        Row ``k`` is the RGB colour of label ``k``.

    Examples
    --------
    >>> segment_colors(2)
    array([[ 31, 119, 180],
           [255, 127,  14]], dtype=uint8)
    """
    n = _as_int(n, "n", minimum=0)
    if n <= _TAB10.shape[0]:
        return _TAB10[:n].copy()
    j = np.arange(n - _TAB10.shape[0])
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    hue = (0.05 + j * golden) % 1.0
    sat = np.array([0.65, 0.9, 0.5])[j % 3]
    val = np.array([0.95, 0.75, 0.85, 0.6])[(j // 3) % 4]
    extra = _hsv_to_rgb(hue, sat, val)
    return np.concatenate([_TAB10, extra])


def _hsv_to_rgb(hue, sat, val):
    """Vectorised HSV (each in [0, 1]) to uint8 RGB rows."""
    sector = np.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    p = val * (1.0 - sat)
    q = val * (1.0 - sat * frac)
    t = val * (1.0 - sat * (1.0 - frac))
    sector = sector.astype(int) % 6
    table = np.stack(
        [
            np.stack([val, t, p], axis=-1),
            np.stack([q, val, p], axis=-1),
            np.stack([p, val, t], axis=-1),
            np.stack([p, q, val], axis=-1),
            np.stack([t, p, val], axis=-1),
            np.stack([val, p, q], axis=-1),
        ]
    )
    rgb = table[sector, np.arange(hue.size)]
    return np.rint(rgb * 255.0).astype(np.uint8)


def boundaries(labels, *, mode="thin"):
    """Pixels on the border between two segments.

    Only borders between valid segments count; the edge of the invalid (-1)
    area is not a boundary and invalid pixels are never marked.

    Parameters
    ----------
    labels : (H, W) or (Z, H, W) int ndarray
        Labels, -1 for invalid pixels.
    mode : {"thin", "thick"}, default "thin"
        "thin" marks one pixel of each pair of face-neighbours with
        different labels (the one with the lower index), giving lines one
        pixel wide; "thick" marks both.

    Returns
    -------
    mask : bool ndarray, same shape as ``labels``

    Examples
    --------
    >>> boundaries(np.array([[0, 0, 1, 1]])).astype(int)
    array([[0, 1, 0, 0]])
    """
    labels = _as_label_array(labels, "labels")
    if mode not in ("thin", "thick"):
        raise ValueError(f"mode must be 'thin' or 'thick', got {mode!r}")
    return _boundary_mask(labels, thick=mode == "thick")


def _boundary_mask(labels, *, thick):
    mask = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        offset = tuple(1 if d == axis else 0 for d in range(labels.ndim))
        sl_a, sl_b = _pair_slices(offset)
        a, b = labels[sl_a], labels[sl_b]
        change = (a != b) & (a >= 0) & (b >= 0)
        mask[sl_a] |= change
        if thick:
            mask[sl_b] |= change
    return mask


def overlay(
    rgb,
    labels,
    *,
    alpha=0.5,
    boundaries=True,
    colors=None,
    boundary_color=(255, 255, 255),
):
    """Segment colours blended over a picture, with segment borders drawn.

    Valid pixels become ``(1 - alpha) * rgb + alpha * colors[label]``.
    Invalid pixels (label -1) get no colour: they are blended with black
    at the same ``alpha``, i.e. the picture darkened by ``1 - alpha``. With
    ``alpha=0`` and ``boundaries=False`` the picture comes back unchanged.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        The picture, e.g. from :func:`display_rgb`.
    labels : (H, W) int ndarray
        Labels ``0..K-1``, -1 for invalid pixels. For a volume pass one slice.
    alpha : float, default 0.5
        Opacity of the segment colours, in ``[0, 1]``.
    boundaries : bool, default True
        Draw one-pixel lines in ``boundary_color`` between segments (see
        :func:`boundaries`, mode "thin").
    colors : (n, 3) array of int in 0..255, optional
        Colour of each label; needs a row for every label present. Default
        :func:`segment_colors`.
    boundary_color : (int, int, int), default (255, 255, 255)
        RGB colour of the boundary lines.

    Returns
    -------
    picture : (H, W, 3) uint8 ndarray
        A new array.

    Examples
    --------
    >>> rgb = np.full((1, 2, 3), 100, dtype=np.uint8)
    >>> overlay(rgb, np.array([[0, -1]]), alpha=0.5, boundaries=False,
    ...         colors=[[200, 0, 0]])
    array([[[150,  50,  50],
            [ 50,  50,  50]]], dtype=uint8)
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise TypeError(
            f"rgb must be uint8 (use display_rgb to convert), got dtype {rgb.dtype}"
        )
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {rgb.shape}")
    labels = _as_label_array(labels, "labels", ndims=(2,))
    if labels.shape != rgb.shape[:2]:
        raise ValueError(
            f"labels must have the shape of rgb without channels {rgb.shape[:2]}, "
            f"got {labels.shape}"
        )
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    n_labels = int(labels.max()) + 1 if labels.size else 0
    colors = segment_colors(n_labels) if colors is None else _as_colors(colors, "colors")
    if colors.shape[0] < n_labels:
        raise ValueError(
            f"colors must have a row for every label (max label {n_labels - 1}), "
            f"got {colors.shape[0]} rows"
        )
    edge_color = _as_colors([boundary_color], "boundary_color")[0]

    # Row 0 (black) serves label -1, so invalid pixels are only darkened.
    # OpenCV looks the colours up and blends (rounding to nearest) several
    # times faster than float arithmetic in NumPy.
    lut = np.zeros((max(colors.shape[0] + 1, 256), 3), dtype=np.uint8)
    lut[1:colors.shape[0] + 1] = colors
    out = np.empty(rgb.shape, dtype=np.uint8)
    for rows in _row_blocks(rgb.shape[0], rgb.shape[1]):
        index = labels[rows].astype(np.intp) + 1
        if len(lut) == 256:
            index = index.astype(np.uint8)
            tint = cv2.LUT(cv2.merge([index, index, index]), lut[:, np.newaxis])
        else:
            tint = lut[index]
        out[rows] = cv2.addWeighted(np.ascontiguousarray(rgb[rows]), 1.0 - alpha,
                                    tint, alpha, 0.0)
    if boundaries:
        out[_boundary_mask(labels, thick=False)] = edge_color
    return out


def _as_colors(colors, name):
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f"{name} must be RGB triples of shape (n, 3), got shape {colors.shape}")
    if not (np.issubdtype(colors.dtype, np.number) and np.isrealobj(colors)):
        raise TypeError(f"{name} must be numbers in 0..255, got dtype {colors.dtype}")
    if colors.size and (not np.all(np.isfinite(colors)) or colors.min() < 0 or colors.max() > 255):
        raise ValueError(f"{name} must hold values in 0..255, got {colors.tolist()[:4]}")
    return np.rint(colors).astype(np.uint8)


# ----------------------------------------------------------------------------
# statistics


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
