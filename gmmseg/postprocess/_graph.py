"""The neighbour structure of a label map: its connected pieces and who touches whom.

Owns: labelling the connected regions of a label map (compiled code of
`_compiled`, OpenCV or scikit-image: the same regions in raster order),
the two forms a labelled map takes for the small-region clean-up
(:class:`RunRegions`, runs of 2-D rows, and :class:`PixelRegions`, a map of
ids), renumbering regions in raster order, the neighbour offsets and slices
that pair each pixel with its neighbours, the pixel pairs between touching
regions, and the border length and edge strength of every pair of touching
regions.  The lower layer of :mod:`.labels` (small-region cleanup) and
:mod:`.regions` (the region hierarchy); it decides nothing about which
regions merge.
"""

import functools
import itertools

import cv2
import numpy as np
from skimage import measure

from .._system import compiled_kernels_wanted, import_compiled
from ._arrays import _run_lengths, _run_starts

# 2-D maps are labelled by runs in compiled code (`_compiled`) when Numba is
# installed: 5-10x faster than OpenCV label by label at millions of pixels.
USE_COMPILED = compiled_kernels_wanted()


@functools.cache
def _compiled():
    """The `_compiled` module, imported on first use; None where Numba fails to load."""
    return import_compiled(__package__, "_compiled")


def _use_compiled():
    """Whether this call runs the compiled code (wanted, and Numba loads)."""
    return USE_COMPILED and _compiled() is not None


# 2-D label maps with up to this many labels are split into regions by
# OpenCV, one label at a time; more labels (or volumes) by scikit-image.
_OPENCV_MAX_LABELS = 64


def _label_regions(labels, connectivity):
    """Connected regions of equal label, in one pass whatever the number of labels.

    Returns ``regions`` (int32 or wider, 0 at -1 pixels, 1..R elsewhere;
    widen before squaring region counts) and ``region_label`` (int64,
    length R + 1, -1 at index 0).
    """
    if labels.ndim == 2 and labels.size and _use_compiled():
        runs, region_label = _label_runs(labels, connectivity)
        return runs.paint(np.arange(len(region_label), dtype=np.int32)), region_label
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


# A map whose runs are shorter than this on average (pixels) is held as
# pixels: runs pay where they are long, and a speckled map's runs are single
# pixels with a run's overheads.  Runs and pixels cost about the same near a
# mean run of 3-4 pixels (``python scripts/bench_save_parts.py`` cleans maps
# of 1 to 9 pixels a run both ways).
_SHORTEST_MEAN_RUN = 4


def _connected(labels, connectivity):
    """Connected regions of equal label, as :class:`RunRegions` (2-D, compiled)
    or :class:`PixelRegions`, and ``region_label`` as :func:`_label_regions` gives it."""
    if labels.ndim == 2 and labels.size and _use_compiled():
        runs, region_label = _label_runs(labels, connectivity)
        if len(runs.run_region) * _SHORTEST_MEAN_RUN <= labels.size:
            return runs, region_label
        return PixelRegions(runs.paint(np.arange(len(region_label), dtype=np.int32))), region_label
    regions, region_label = _label_regions(labels, connectivity)
    return PixelRegions(regions), region_label


def _label_runs(labels, connectivity):
    # Writable C order: Numba compiles the function once for each type and layout it meets.
    first, start, stop, run_region, region_label = _compiled().label_runs(
        np.require(labels, _compiled_int(labels.dtype), ["C", "W"]), connectivity == 2)
    return RunRegions(labels.shape, first, start, stop, run_region), region_label


def _compiled_int(dtype):
    """int32 or int64, whichever holds every value of the integer ``dtype``: the
    compiled code takes these two (one compiled version each)."""
    wide = dtype.itemsize > 4 or (dtype.kind == "u" and dtype.itemsize == 4)
    return np.int64 if wide else np.int32


class PixelRegions:
    """A map of region ids (1..R; 0 in no region), any number of dimensions.

    The NumPy form of what :class:`RunRegions` holds as runs: both answer the
    questions the small-region cleanup asks, with the same answers.
    """

    def __init__(self, regions):
        self.regions = regions

    def sizes(self, n):
        """Pixels per region id ``0 .. n - 1``, int64."""
        flat = self.regions.reshape(-1)
        starts = _run_starts(flat)                  # count runs, not pixels
        return np.bincount(flat[starts], _run_lengths(starts, flat.size),
                           minlength=n).astype(np.int64)

    def borders(self, offset):
        """Region ids ``(ra, rb)`` of the neighbouring pixels at ``offset`` in
        different regions (both >= 1), and how many pixel pairs each entry
        stands for: None, one each."""
        if self.regions.ndim == 2 and _use_compiled():
            # The same pairs in the same order, without image-sized temporaries.
            flat = self.regions.reshape(-1)
            ia, ib = _compiled().neighbour_pairs(self.regions, *offset, 1)
            return flat[ia], flat[ib], None
        sl_a, sl_b = _pair_slices(offset)
        a, b = self.regions[sl_a], self.regions[sl_b]
        differ = a != b
        ra, rb = a[differ], b[differ]
        both = (ra > 0) & (rb > 0)
        return ra[both], rb[both], None

    def relabel(self, table):
        """The regions renamed: region ``r`` becomes ``table[r]``."""
        return PixelRegions(table[self.regions])

    def paint(self, table):
        """``table[r]`` on each pixel of region ``r``: a map of the regions' values."""
        return table[self.regions]


class RunRegions:
    """A 2-D map of region ids held as runs of pixels along rows (compiled code).

    A photo's label map has millions of pixels but a few runs per row, so
    sizes, borders and renaming cost per run; only :meth:`paint` writes
    pixels.  See :class:`PixelRegions` for the methods.
    """

    def __init__(self, shape, first, start, stop, run_region):
        self.shape, self.first, self.start, self.stop = shape, first, start, stop
        self.run_region = run_region

    def sizes(self, n):
        sizes = np.bincount(self.run_region, self.stop - self.start, minlength=n).astype(np.int64)
        sizes[0] = self.shape[0] * self.shape[1] - sizes[1:].sum()    # pixels in no run
        return sizes

    def borders(self, offset):
        return _compiled().run_borders(self.first, self.start, self.stop, self.run_region,
                                       *offset)

    def relabel(self, table):
        return RunRegions(self.shape, self.first, self.start, self.stop, table[self.run_region])

    def paint(self, table):
        values = table[self.run_region]
        painted = _compiled().paint_runs(self.first, self.start, self.stop,
                                         values.astype(_compiled_int(values.dtype)),
                                         self.shape[1], int(table[0]))
        return painted.astype(table.dtype, copy=False)


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


def _neighbour_pairs(regions):
    """For each neighbour direction (faces, edges and corners, as regions are
    connected): flat indices ``(ia, ib)`` of the pixel pairs in different
    regions, both valid.  Borders are a small share of the pixels, so only
    the inequality test runs over the whole image."""
    regions = np.ascontiguousarray(regions)
    if regions.ndim == 2 and _use_compiled():
        for di, dj in _half_offsets(2, 2):
            yield _compiled().neighbour_pairs(regions, di, dj, 0)
        return
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


def _borders(regions, edge, pairs=None):
    """``{(a, b): [pixel pairs, summed edge strength]}`` for neighbouring regions ``a < b``.

    ``pairs``: what :func:`_neighbour_pairs` gives for ``regions``, if the
    caller found them already (while the edge strength was being worked out).
    """
    n = int(regions.max()) + 1
    flat, edge = regions.reshape(-1), edge.reshape(-1)
    keys, strength = [], []
    for ia, ib in _neighbour_pairs(regions) if pairs is None else pairs:
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
