"""The connected-region hierarchy: split a label map into connected regions and merge them.

Owns: the region constants (each with where its value comes from), the
check of a region mode (:func:`check_region_mode`), :class:`RegionHierarchy`
and its cuts, and :func:`region_hierarchy`: region moments, the edge
strength between regions and the greedy Gaussian merging.  Which pixels
pair with which and the borders between regions come from :mod:`._graph`;
the finest level from the small-region clean-up of :mod:`.labels`.  Draws
nothing and writes no file.
"""

import heapq
import numbers
import threading

import cv2
import numpy as np
from scipy import ndimage

from ._arrays import _as_int, _as_label_array, _check_real, _run_lengths, _run_starts
from ._graph import (_borders, _compiled, _neighbour_pairs, _raster_order, _touching_pairs,
                     _use_compiled)
from .labels import _remove_small
from .stats import pixel_counts


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


# What a caller may ask of regions besides a number: merged up to a scale,
# for colour photos only ("auto") or for every image ("scale"); or none.
_SCALE_MODES = ("auto", "scale")
_OFF_WORDS = ("off", "none")


def check_region_mode(value, name="regions"):
    """A region mode, checked and normalised: what ``regions=`` may ask for.

    The one check of a region mode, for the library and the command line
    alike (the command line turns a string of digits into an int first).

    Parameters
    ----------
    value : {"auto", "scale", "off"}, int, None or False
        "auto": regions merged up to a scale (:data:`REGION_SCALE`), for
        colour photos only; "scale": the same for every image; an int
        ``N >= 1``: ``N`` regions; "off" ("none"), None or False: no
        regions.  Words are read regardless of case and surrounding blanks.
    name : str, default "regions"
        The parameter's name, for the error message.

    Returns
    -------
    "auto", "scale", int or None
        The mode as :meth:`gmmseg.Segmentation.save` reads it.

    Raises
    ------
    ValueError
        For anything else: another word, a number below 1, a bool True, a
        float (even 3.0) or a string of digits.

    Examples
    --------
    >>> check_region_mode(" Auto "), check_region_mode(3), check_region_mode("off")
    ('auto', 3, None)
    """
    if value is None or value is False:
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _SCALE_MODES:
            return word
        if word in _OFF_WORDS:
            return None
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ValueError(f"{name} must be 'auto', 'scale', 'off', None or a number of regions "
                     f">= 1, got {value!r}")


def check_region_scale(value, name="scale"):
    """A region scale, checked: a share of the costliest merge, in ``[0, 1]``.

    The one check of a scale, for :meth:`RegionHierarchy.cut`, ``save`` and
    the command line.

    Examples
    --------
    >>> check_region_scale(0.005)
    0.005
    """
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and 0 <= value <= 1):
        raise ValueError(f"{name} must be a number in [0, 1] (a share of the "
                         f"costliest merge), got {value!r}")
    return float(value)


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
        joins the first, the lower id.  Merging stops when no two regions touch, so a
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
            scale = check_region_scale(scale)
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
    edge = None
    if labels.size >= max(min_size, 1) and int(labels.min()) >= 0:
        # Every pixel ends up in a region (isolated specks need invalid
        # pixels around them): the edge strength is worked out meanwhile.
        edge = _in_background(_edge_strength, values, np.ones(labels.shape, bool), spacing)
    # The cleanup's face-connected regions are the finest level; pieces of a label
    # touching at a corner look alike and merge first (8-connected: same BSDS500 scores).
    cleaned, region_label = _remove_small(labels, min_size, 1)
    n = len(region_label) - 1
    # Ids 1..n in raster order (0 off the valid pixels) written as 0..n-1 (and -1).
    regions = cleaned.paint(np.arange(-1, n, dtype=np.int32))
    if min_size > 1 and (n == 1 or cleaned.sizes(1)[0] > 0):
        # Isolated specks need invalid pixels around them, or an image of one small region.
        regions, n = _without_specks(regions, min_size)
    if n == 0:
        return RegionHierarchy(regions, np.zeros((0, 2), np.int64), np.zeros(0))
    inside = regions >= 0 if edge is None else None
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
    pairs = list(_neighbour_pairs(regions))      # before waiting for the edge strength
    edge = _edge_strength(values, inside, spacing) if edge is None else edge()
    borders = _borders(regions, edge, pairs)
    lengths = {pair: border[0] for pair, border in borders.items()}  # merging edits borders
    return RegionHierarchy(regions, *_gaussian_merges(count, sums, squares, borders,
                                                      float(boundary_weight), ridge),
                           sizes=count, borders=lengths)


def _without_specks(regions, min_size):
    """``regions`` (0..n-1, -1) without those under ``min_size`` that touch no
    other (nothing to merge with, so no region), renumbered; and their count."""
    count = pixel_counts(regions)
    touching = np.zeros(len(count), dtype=bool)
    touching[_touching_pairs(regions).ravel()] = True
    speck = (count < min_size) & ~touching
    if not speck.any():
        return regions, len(count)
    new_id = np.where(speck, -1, np.arange(len(count)))
    regions = _raster_order(np.where(regions >= 0, new_id[np.maximum(regions, 0)], -1))
    return regions, int(regions.max()) + 1 if regions.size else 0


def _in_background(function, *args):
    """Start ``function(*args)`` on a daemon thread; return a callable that waits for its result.

    The work runs mostly in OpenCV and NumPy, which let go of the GIL, so it
    takes a second core.  Where no thread can start (interpreter shutdown)
    the function runs at once.
    """
    result = {}

    def work():
        try:
            result["value"] = function(*args)
        except BaseException as err:  # noqa: BLE001 -- handed to the caller
            result["error"] = err

    thread = threading.Thread(target=work, name="gmmseg-edges", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # "can't create new thread at interpreter shutdown"
        work()
        thread = None

    def wait():
        if thread is not None:
            thread.join()
        if "error" in result:
            raise result["error"]
        return result["value"]

    return wait


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
    if regions.ndim == 2 and n_channels == 3 and _use_compiled():
        # Lab photos, compiled: each run summed in registers (3-4x faster).
        totals = _compiled().region_moments3(
            np.ascontiguousarray(regions), np.ascontiguousarray(values), origin, n)[1:]
        count, totals = totals[:, 0], totals[:, 1:]
    else:
        count, totals = _run_moments(flat, rows, origin, n, upper)
    squares = np.empty((n, n_channels, n_channels))
    squares[:, upper[0], upper[1]] = totals[:, n_channels:]
    squares[:, upper[1], upper[0]] = totals[:, n_channels:]
    return count, totals[:, :n_channels], squares


def _run_moments(flat, rows, origin, n, upper):
    """:func:`_region_moments`' count ``(n,)`` and sums ``(n, C + C (C + 1) / 2)``
    (channels, then the upper triangle of the products) with NumPy."""
    n_channels = rows.shape[1]
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
    return count, totals


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
    axes and channels, float32.  OpenCV for 2-D images (several times faster
    than scipy there, :func:`_squared_gradient_2d`), scipy for volumes (a few
    image-sized float32 arrays at once)."""
    if values.ndim == 3:
        return _squared_gradient_2d(values, spacing)
    total = np.zeros(values.shape[:-1], np.float32)
    axes = [a for a, n in enumerate(total.shape) if n > 1]   # one slice: no change along it
    for c in range(values.shape[-1] if axes else 0):
        smooth = ndimage.gaussian_filter(values[..., c].astype(np.float32, copy=False),
                                         sigma=1.0 / spacing, mode="nearest")
        derivatives = np.gradient(smooth, *spacing[axes], axis=axes)
        for derivative in derivatives if len(axes) > 1 else [derivatives]:
            total += derivative * derivative
    return total


# Values (pixels x channels) per stripe of :func:`_squared_gradient_2d`, of
# up to _GRADIENT_CHANNELS channels at once: its buffers stay at a few MiB,
# in the cache between the filters, and the rows filtered twice (the reach
# past each stripe) a few per cent.  Smaller stripes refilter more rows,
# larger ones leave the cache (``python scripts/bench_save_parts.py`` times
# several sizes on a photo's Lab map).
_GRADIENT_STRIPE_VALUES = 3 << 19
_GRADIENT_CHANNELS = 4


def _squared_gradient_2d(values, spacing):
    """:func:`_squared_gradient` of an ``(H, W, C)`` image: up to four
    channels at once, stripe by stripe of rows.  Each stripe is filtered
    with the rows the blur and the differences reach past it (OpenCV's
    Gaussian kernel reaches 4 sigma), so the result does not depend on the
    stripes; the image's own edges are replicated."""
    height, width, n_channels = values.shape
    sigma_rows, sigma_columns = 1.0 / spacing[0], 1.0 / spacing[1]
    halo = int(np.ceil(4 * sigma_rows)) + 2
    group = min(n_channels, _GRADIENT_CHANNELS)
    # At least 4 halos of rows: a very wide image's stripes stay mostly new rows.
    step = max(4 * halo, _GRADIENT_STRIPE_VALUES // (width * group))
    total = np.zeros((height, width), np.float32)
    for top in range(0, height, step):
        bottom = min(height, top + step)
        first, last = max(0, top - halo), min(height, bottom + halo)
        for c in range(0, n_channels, group):
            channels = values[first:last, :, c:c + group]
            smooth = cv2.GaussianBlur(np.ascontiguousarray(channels, np.float32), (0, 0),
                                      sigmaX=sigma_columns, sigmaY=sigma_rows,
                                      borderType=cv2.BORDER_REPLICATE)
            squares = None
            for dx, dy, step_size in ((1, 0, spacing[1]), (0, 1, spacing[0])):
                # A central difference: OpenCV's 1 x 3 Sobel kernel [-1, 0, 1], halved.
                derivative = cv2.Sobel(smooth, cv2.CV_32F, dx, dy, ksize=1,
                                       scale=0.5 / step_size, borderType=cv2.BORDER_REPLICATE)
                cv2.multiply(derivative, derivative, dst=derivative)
                squares = (derivative if squares is None
                           else cv2.add(squares, derivative, dst=squares))
            if channels.shape[-1] > 1:      # summed over the channels
                squares = cv2.transform(squares, np.ones((1, channels.shape[-1]), np.float32))
            total[top:bottom] += squares[top - first:bottom - first]
    return total


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

    def pair_costs(a, b, border):
        """The cost of merging each ``b`` into its ``a`` (``border``: ``(d, 2)``
        pixel pairs and summed edge strength along their border)."""
        n = count[a] + count[b]
        joined = n * log_det(n, sums[a] + sums[b], squares[a] + squares[b])
        # The ridge keeps this >= 0 up to rounding.
        loss = np.maximum(0.5 * (joined - own[a] - own[b]), 0.0)
        return loss * (1.0 + border[:, 1] / border[:, 0]) ** weight

    def entry(a):
        """``a``'s cheapest neighbour as a heap entry (ties: the lower id)."""
        others = np.fromiter(neighbours[a], dtype=np.int64, count=len(neighbours[a]))
        costs = pair_costs(a, others, np.array(list(neighbours[a].values())))
        best = int(np.lexsort((others, costs))[0])
        b = int(others[best])
        return float(costs[best]), a, b, version[a], version[b]

    def first_entries():
        """Every region's entry at the start, as :func:`entry` gives it, from one pass."""
        pairs = np.array(list(borders), dtype=np.int64).reshape(-1, 2)
        src = np.concatenate([pairs[:, 0], pairs[:, 1]])      # each pair from both sides
        dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
        border = np.array(list(borders.values()), dtype=np.float64).reshape(-1, 2)
        costs = pair_costs(src, dst, np.concatenate([border, border]))
        order = np.lexsort((dst, costs, src))           # by region, cheapest, lower id
        firsts = order[np.r_[True, src[order][1:] != src[order][:-1]]] if len(order) else order
        return [(float(costs[i]), int(src[i]), int(dst[i]), 0, 0) for i in firsts]

    heap = first_entries()
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
        # The lower id stays: a merge's cost is symmetric, so which region's
        # entry came up first is rounding and must not change the result.
        a, b = min(a, b), max(a, b)
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
