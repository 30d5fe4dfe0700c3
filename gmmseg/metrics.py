"""Region metrics for comparing a segmentation with human segmentations.

The three standard region metrics of the Berkeley Segmentation benchmark
(Arbeláez et al., "Contour Detection and Hierarchical Image Segmentation",
IEEE TPAMI 33(5), 2011):

* Probabilistic Rand Index (PRI): the mean over annotators of the Rand index,
  the fraction of pixel pairs on which two segmentations agree (same segment
  in both, or different segments in both).  Higher is better; 1 is perfect.
* Variation of Information (VoI): ``H(A|B) + H(B|A)``, averaged over
  annotators, in bits by default (``log2``, as the BSDS benchmark's
  ``match_segmentations2.m`` and :func:`skimage.metrics.variation_of_information`
  compute it).  Lower is better; 0 is perfect.
* Segmentation Covering: how well the segmentation's regions cover each
  annotator's regions, by intersection over union.  Higher is better.

Every metric is computed from the contingency table of the two label maps
(pixel counts per pair of labels), built in O(N) time with one ``bincount``
or ``unique`` over integer pair codes, so memory is O(N + n_labels^2) and no
pair of pixels is ever enumerated.  Labels are arbitrary integers: only
which pixels share a label matters, not the label values, and a segment need
not be connected.  Pixels carrying ``ignore_label`` (default -1, the label
gmmseg gives masked pixels) in *either* map are left out of every count.

>>> seg = np.array([[0, 0, 1, 1]])
>>> gt = np.array([[5, 5, 5, 7]])
>>> float(rand_index(seg, gt))
0.5
>>> region_metrics(seg, [gt, gt])["covering"]   # (3 * 2/3 + 1 * 1/2) / 4
0.625
"""

import numpy as np
from scipy import sparse

__all__ = [
    "contingency",
    "mean_variation_of_information",
    "probabilistic_rand_index",
    "rand_index",
    "region_metrics",
    "segmentation_covering",
    "variation_of_information",
]

# Above this many cells a dense bincount over pair codes would cost more
# memory than the pixels themselves; np.unique over the codes is used instead.
_DENSE_CELLS_PER_PIXEL = 4


def contingency(a, b, *, ignore_label=-1):
    """Contingency table of two label maps.

    Parameters
    ----------
    a, b : int ndarray
        Label maps of the same shape (any number of dimensions).
    ignore_label : int or None, default=-1
        Pixels with this label in ``a`` or in ``b`` are left out.  None keeps
        every pixel.

    Returns
    -------
    table : (n_a, n_b) scipy.sparse.csr_array of int64
        ``table[i, j]`` is the number of pixels with the i-th smallest label of
        ``a`` and the j-th smallest label of ``b`` (labels that occur on
        counted pixels only, so every row and column sum is positive).

    Raises
    ------
    ValueError
        The shapes differ, or no pixel is left after ``ignore_label``.

    Examples
    --------
    >>> contingency(np.array([0, 0, 1, -1]), np.array([3, 4, 4, 4])).toarray()
    array([[1, 1],
           [0, 1]])
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} and {b.shape}")
    a = a.ravel()
    b = b.ravel()
    if ignore_label is not None:
        keep = (a != ignore_label) & (b != ignore_label)
        if not keep.all():
            a, b = a[keep], b[keep]
    if a.size == 0:
        raise ValueError("no pixel left to compare (all carry ignore_label or the maps are empty)")
    labels_a, ia = _compact(a)
    labels_b, ib = _compact(b)
    n_a, n_b = labels_a.size, labels_b.size
    codes = ia.astype(np.int64).ravel() * n_b + ib.ravel()
    if n_a * n_b <= _DENSE_CELLS_PER_PIXEL * a.size:
        counts = np.bincount(codes, minlength=n_a * n_b)
        codes = np.flatnonzero(counts)
        counts = counts[codes]
    else:
        codes, counts = np.unique(codes, return_counts=True)
    rows, cols = np.divmod(codes, n_b)
    return sparse.csr_array((counts.astype(np.int64), (rows, cols)), shape=(n_a, n_b))


def _compact(labels):
    """The distinct labels (sorted) and each pixel's index among them.

    ``np.unique(labels, return_inverse=True)``, without its sort when the
    labels are small non-negative integers (label maps almost always are):
    a bincount finds the labels present and a lookup table numbers them.
    """
    if labels.dtype.kind in "iu":
        low, high = int(labels.min()), int(labels.max())
        if low >= 0 and high <= 4 * labels.size:
            labels = labels.astype(np.intp, copy=False)  # bincount refuses uint64 on old NumPy
            present = np.bincount(labels, minlength=high + 1) > 0
            index = np.cumsum(present) - 1
            return np.flatnonzero(present), index[labels]
    return np.unique(labels, return_inverse=True)


def _marginals(table):
    """Row sums, column sums and the cell counts of a contingency table, as float."""
    rows = np.asarray(table.sum(axis=1), dtype=float).ravel()
    cols = np.asarray(table.sum(axis=0), dtype=float).ravel()
    return rows, cols, table.data.astype(float)


def _rand_index_from_table(table):
    rows, cols, cells = _marginals(table)
    n = cells.sum()
    if n < 2:
        return 1.0
    # Pairs joined in exactly one of the two maps; the n same-pixel "pairs"
    # in each sum of squares cancel.
    disagreements = 0.5 * (rows @ rows + cols @ cols) - cells @ cells
    return float(1.0 - disagreements / (0.5 * n * (n - 1)))


def _entropy(counts, n):
    """Entropy (nats) of the distribution ``counts / n``; counts are positive."""
    return float(np.log(n) - counts @ np.log(counts) / n)


def _variation_of_information_from_table(table, base):
    rows, cols, cells = _marginals(table)
    n = cells.sum()
    # H(A|B) + H(B|A) = 2 H(A, B) - H(A) - H(B).
    voi = 2.0 * _entropy(cells, n) - _entropy(rows, n) - _entropy(cols, n)
    return float(max(voi, 0.0) / np.log(base))


def _covered_pixels_from_table(table):
    """Sum over the columns' regions R of ``|R| max_R' IoU(R, R')``; and N."""
    rows, cols, cells = _marginals(table)
    coo = table.tocoo()
    iou = cells / (rows[coo.row] + cols[coo.col] - cells)
    best = np.zeros(cols.size)
    np.maximum.at(best, coo.col, iou)
    return float(cols @ best), float(cells.sum())


def rand_index(seg, gt, *, ignore_label=-1):
    """Rand index: the fraction of pixel pairs on which two label maps agree.

    ``RI = 1 - (sum_i C(a_i, 2) + sum_j C(b_j, 2) - 2 sum_ij C(n_ij, 2)) / C(N, 2)``
    with ``n_ij`` the contingency table, ``a_i``, ``b_j`` its row and column
    sums and N the number of counted pixels (pairs of distinct pixels, as the
    BSDS benchmark counts them).  Symmetric in its arguments.

    Parameters
    ----------
    seg, gt : int ndarray
        Label maps of the same shape.
    ignore_label : int or None, default=-1
        See :func:`contingency`.

    Returns
    -------
    float
        In [0, 1]; 1 when the maps are the same partition.  A single counted
        pixel gives 1.

    Examples
    --------
    >>> rand_index(np.array([0, 0, 1]), np.array([2, 2, 2]))  # 1 of 3 pairs agree
    0.33333333333333337
    """
    return _rand_index_from_table(contingency(seg, gt, ignore_label=ignore_label))


def probabilistic_rand_index(seg, gts, *, ignore_label=-1):
    """Probabilistic Rand Index: the mean Rand index over annotators.

    Parameters
    ----------
    seg : int ndarray
        The segmentation.
    gts : sequence of int ndarray
        One label map per annotator, each of ``seg``'s shape.
    ignore_label : int or None, default=-1
        See :func:`contingency`.

    Returns
    -------
    float

    Examples
    --------
    >>> seg = np.array([0, 0, 1])
    >>> probabilistic_rand_index(seg, [seg, np.array([2, 2, 2])])
    0.6666666666666667
    """
    return float(np.mean([rand_index(seg, gt, ignore_label=ignore_label) for gt in _as_list(gts, np.ndim(seg))]))


def variation_of_information(seg, gt, *, ignore_label=-1, base=2):
    """Variation of Information ``H(seg|gt) + H(gt|seg)``, in bits by default.

    The BSDS500 benchmark (``match_segmentations2.m``) and
    :func:`skimage.metrics.variation_of_information` (which returns the two
    conditional entropies) both use ``log2``; published BSDS VoI numbers
    (e.g. about 1.17 between human annotators) are in bits.  ``base=math.e``
    gives nats (bits times log 2, about 0.693).

    Parameters
    ----------
    seg, gt : int ndarray
        Label maps of the same shape.
    ignore_label : int or None, default=-1
        See :func:`contingency`.
    base : float, default=2
        Base of the logarithm.

    Returns
    -------
    float
        >= 0; 0 when the maps are the same partition.  Symmetric.

    Examples
    --------
    >>> variation_of_information(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]))  # 1 bit
    1.0
    """
    return _variation_of_information_from_table(contingency(seg, gt, ignore_label=ignore_label),
                                                 base)


def mean_variation_of_information(seg, gts, *, ignore_label=-1, base=2):
    """Variation of Information averaged over annotators (BSDS's VoI).

    Parameters
    ----------
    seg : int ndarray
    gts : sequence of int ndarray
        One label map per annotator.
    ignore_label : int or None, default=-1
    base : float, default=2
        Base of the logarithm (2: bits, as BSDS).

    Returns
    -------
    float

    Examples
    --------
    >>> seg = np.array([0, 0, 1, 1])
    >>> mean_variation_of_information(seg, [seg, np.zeros(4, int)])  # (0 + 1) / 2
    0.5
    """
    return float(np.mean([variation_of_information(seg, gt, ignore_label=ignore_label, base=base)
                          for gt in _as_list(gts, np.ndim(seg))]))


def segmentation_covering(seg, gts, *, ignore_label=-1):
    """Segmentation Covering of the ground truth by ``seg`` (BSDS convention).

    For one annotator's map G, ``C(seg -> G) = 1/N sum_{R in G} |R| max_{R' in
    seg} IoU(R, R')``: each ground-truth region is matched with the
    segmentation region that overlaps it best by intersection over union, and
    the matches are weighted by the ground-truth region's size.  This is the
    direction the BSDS500 benchmark reports (``cntR / sumR`` in
    ``evaluation_reg_image.m``, "covering G -> S" there).  With several
    annotators the covered pixels and the pixels are summed over annotators,
    as the benchmark does; every map has the same N (unless ``ignore_label``
    removes different pixels), so this is the mean covering over annotators.

    Not symmetric: over-segmenting lowers it (small regions have a small IoU
    with large ground-truth regions), and so does under-segmenting.

    Parameters
    ----------
    seg : int ndarray
        The segmentation.
    gts : int ndarray or sequence of int ndarray
        One label map, or one per annotator.
    ignore_label : int or None, default=-1
        See :func:`contingency`.

    Returns
    -------
    float
        In (0, 1]; 1 when ``seg`` is the same partition as every annotator's.

    Examples
    --------
    >>> gt = np.array([0, 0, 0, 1])
    >>> segmentation_covering(np.array([0, 0, 1, 1]), gt)  # (3 * 2/3 + 1 * 1/2) / 4
    0.625
    """
    covered, total = _covering_counts(seg, _as_list(gts, np.ndim(seg)), ignore_label)
    return covered / total


def region_metrics(seg, gts, *, ignore_label=-1, base=2):
    """PRI, VoI and Segmentation Covering of ``seg`` against annotators, at once.

    One contingency table per annotator serves all three metrics.

    Parameters
    ----------
    seg : int ndarray
    gts : int ndarray or sequence of int ndarray
        One label map, or one per annotator.
    ignore_label : int or None, default=-1
    base : float, default=2
        Base of the logarithm for VoI.

    Returns
    -------
    dict
        ``pri`` (:func:`probabilistic_rand_index`), ``voi``
        (:func:`mean_variation_of_information`), ``covering``
        (:func:`segmentation_covering`), ``covered_pixels`` and
        ``gt_pixels`` (its numerator and denominator, summed over annotators,
        which the BSDS benchmark sums over images before dividing), and
        ``n_segments`` (distinct labels of ``seg`` on counted pixels; the
        largest over annotators if ``ignore_label`` removes different pixels).

    Examples
    --------
    >>> m = region_metrics(np.array([0, 0, 1, 1]), [np.array([0, 0, 1, 1])])
    >>> m["pri"], m["voi"], m["covering"]
    (1.0, 0.0, 1.0)
    """
    tables = [contingency(seg, gt, ignore_label=ignore_label) for gt in _as_list(gts, np.ndim(seg))]
    covered, total = 0.0, 0.0
    for table in tables:
        c, n = _covered_pixels_from_table(table)
        covered += c
        total += n
    return {
        "pri": float(np.mean([_rand_index_from_table(t) for t in tables])),
        "voi": float(np.mean([_variation_of_information_from_table(t, base) for t in tables])),
        "covering": covered / total,
        "covered_pixels": covered,
        "gt_pixels": total,
        "n_segments": max(t.shape[0] for t in tables),
    }


def _covering_counts(seg, gts, ignore_label):
    covered, total = 0.0, 0.0
    for gt in gts:
        c, n = _covered_pixels_from_table(contingency(seg, gt, ignore_label=ignore_label))
        covered += c
        total += n
    return covered, total


def _as_list(gts, ndim):
    """A single ``ndim``-D label map becomes a one-element list; a stack, a list."""
    if isinstance(gts, np.ndarray):
        return list(gts) if gts.ndim == ndim + 1 else [gts]
    gts = list(gts)
    if not gts:
        raise ValueError("no ground-truth label map given")
    return gts
