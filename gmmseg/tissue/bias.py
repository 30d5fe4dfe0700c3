"""A smooth multiplicative bias field: tensor-product cubic B-splines in log intensity.

MR scanners multiply the image by a slowly varying gain (the bias field),
so one tissue is brighter on one side of the head than on the other.  As in
FAST (Zhang, Brady & Smith, IEEE TMI 2001) and N4 (Tustison et al., IEEE TMI
2010), the field is modelled in log intensity, where it adds:
``log x = log b + log y`` with ``y`` the restored image.  Given the tissue
responsibilities, ``log b`` is the weighted least-squares fit of the
residuals ``log x - log mu_k`` by a smooth function: here a tensor product
of uniform cubic B-splines (N4's model) with a second-difference penalty
(a P-spline, Eilers & Marx 1996) that keeps it smooth and defined where
there is no tissue.

The normal equations never form the ``(N, P)`` design matrix: the basis is
separable, so ``sum_i w_i phi_i phi_i^T`` is three matrix products with the
per-axis bases (cost ``N x n_axis^2``), and the field is evaluated the same
way.  Knows no files and no tissue classes.
"""

from __future__ import annotations

import math

import numpy as np
from threadpoolctl import threadpool_limits

#: Distance between B-spline knots, in mm, of ``knot_distance="auto"`` where the
#: field is strong (see :data:`AUTO_FIELD_SPAN`): two to three spans across a
#: brain, as N4's first level (``-b [200]`` in ANTs' brain examples: one span
#: of 200 mm, refined).  A finer field follows bias better but also
#: takes up anatomy (deep grey matter is brighter than cortex, white matter
#: darker under the cortex): on the MNI152 template, 60 mm gave mean Dice
#: 0.909 clean and 0.911 with a +-25 % field, 100 mm 0.917 and 0.911, 150 mm
#: 0.917 and 0.900 (chosen on both; ``scripts/tissue_quality.py``).
DEFAULT_KNOT_DISTANCE = 100.0
#: Knot distance of ``knot_distance="auto"`` where the field is weak (N3's
#: default, one or two spans across a brain).
COARSE_KNOT_DISTANCE = 200.0
#: ``knot_distance="auto"`` keeps the 100 mm field where the first estimate
#: (pure classes, 100 mm knots) spans more than this in log intensity between
#: its 1st and 99th percentiles (0.3: a field of about +-15 %), and starts again
#: with 200 mm knots where it spans less.  A flexible field also takes up
#: anatomy (deep white matter is brighter than the white matter under the
#: cortex), which the intensity likelihood cannot tell from bias: on the
#: clean MNI152 template the 100 mm field raises the log-likelihood over the
#: 200 mm one by 36,000 (1.9 million voxels, 70 more coefficients) and lowers
#: the mean Dice from 0.934 to 0.916, so BIC (a penalty of 506), BIC on the
#: residuals' effective sample size (FWHM about 2 voxels, a tenth of the
#: voxels: 3,600 against 425) and held-out voxels (whose optimism is about
#: one per coefficient) all pick the finer field on a clean scan.  What differs is the size of the field: the first
#: estimate spans 0.16 on the clean template and 0.48-0.58 with a +-25 % field
#: (seeds 1-4, with or without noise); there the 100 mm field follows it better
#: (mean Dice 0.924 against 0.896 at 200 mm, seed 1).
AUTO_FIELD_SPAN = 0.3
#: Weight of the second-difference penalty, relative to the mean diagonal
#: of the data term: small enough not to flatten a real field, large enough
#: to make the system well posed over empty corners of the box.
DEFAULT_SMOOTHNESS = 1e-3


def spline_basis(coords, extent, knot_distance):
    """Uniform cubic B-spline basis over ``[0, extent]`` sampled at ``coords``.

    Parameters
    ----------
    coords : (n,) array-like of float
        Positions along the axis (mm), within ``[0, extent]``.
    extent : float
        Length of the axis (mm); it gets ``ceil(extent / knot_distance)``
        spans, at least one.
    knot_distance : float
        Distance between knots (mm).

    Returns
    -------
    (n, n_spans + 3) float64 ndarray
        Rows sum to 1.

    Examples
    --------
    >>> B = spline_basis(np.arange(10) + 0.5, 10.0, 5.0)
    >>> B.shape, bool(np.allclose(B.sum(1), 1))
    ((10, 5), True)
    """
    coords = np.asarray(coords, dtype=np.float64)
    n_spans = max(1, math.ceil(extent / knot_distance - 1e-9))
    u = np.clip(coords / extent, 0.0, 1.0) * n_spans
    j = np.minimum(np.floor(u).astype(np.intp), n_spans - 1)
    t = u - j
    weights = np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4,
                        -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], axis=1) / 6.0
    basis = np.zeros((len(coords), n_spans + 3))
    rows = np.arange(len(coords))
    for m in range(4):
        basis[rows, j + m] = weights[:, m]
    return basis


def voxel_coords(shape, spacing, start=None, step=1):
    """Voxel-centre positions (mm) per axis of ``grid[start::step]`` in a grid of ``shape``."""
    start = (0,) * len(shape) if start is None else start
    return [(np.arange(s0, n, step) + 0.5) * d for n, d, s0 in zip(shape, spacing, start)]


class SplineField:
    """A smooth scalar field, ``sum_c coef_c phi_c(z, y, x)``, sampled on a grid.

    Parameters
    ----------
    coords : list of (n_axis,) ndarray
        Sample positions (mm) along each axis (see :func:`voxel_coords`);
        the field is evaluated and fitted on their tensor grid.
    extent : tuple of float
        Length (mm) of each axis of the whole image, over which the knots
        are spread, so that fields sampled on a sub-grid or a coarser grid
        share their coefficients.
    knot_distance : float
        Knot distance in mm (see :func:`spline_basis`).
    smoothness : float
        Penalty weight, relative to the data (see :data:`DEFAULT_SMOOTHNESS`).
    """

    def __init__(self, coords, extent, *, knot_distance=DEFAULT_KNOT_DISTANCE,
                 smoothness=None):
        smoothness = DEFAULT_SMOOTHNESS if smoothness is None else smoothness
        if isinstance(knot_distance, bool) or not (
                isinstance(knot_distance, (int, float)) and knot_distance > 0):
            raise ValueError(
                f"knot_distance must be a positive number (mm), got {knot_distance!r}")
        self.extent = tuple(float(e) for e in extent)
        self.knot_distance = float(knot_distance)
        self.smoothness = float(smoothness)
        self.bases = [spline_basis(c, e, knot_distance) for c, e in zip(coords, self.extent)]
        self.shape = tuple(len(c) for c in coords)
        self.sizes = tuple(b.shape[1] for b in self.bases)
        self.coef = np.zeros(self.sizes)
        self._penalty_matrix = None

    def resampled(self, coords):
        """The same field (same coefficients) sampled at other positions."""
        other = SplineField(coords, self.extent, knot_distance=self.knot_distance,
                            smoothness=self.smoothness)
        other.coef = self.coef.copy()
        return other

    def evaluate(self, coef=None):
        """The field on the grid, float32 of :attr:`shape`."""
        out = self.coef if coef is None else coef
        for basis in self.bases:
            # Contract the coefficient axis with the basis, which puts the
            # grid axis last; after all axes, the grid axes are in order.
            out = np.tensordot(out, basis, axes=([0], [1]))
        return out.astype(np.float32)

    def _penalty(self):
        """Sum over axes of the second-difference penalty, ``(P, P)``."""
        total = np.zeros((math.prod(self.sizes),) * 2)
        for axis, n in enumerate(self.sizes):
            if n < 3:
                continue
            d = np.diff(np.eye(n), 2, axis=0)
            factors = [np.eye(m) for m in self.sizes]
            factors[axis] = d.T @ d
            term = factors[0]
            for f in factors[1:]:
                term = np.kron(term, f)
            total += term
        return total

    def fit(self, target, weight):
        """Weighted least squares of ``target`` by the field (penalised), in place.

        Parameters
        ----------
        target, weight : ndarray of :attr:`shape`
            Values to fit and their weights (0: not used).

        Returns
        -------
        self
        """
        wt = (weight * target).astype(np.float64)
        w = weight.astype(np.float64)
        gram = self._contract(w, pairs=True)
        rhs = self._contract(wt, pairs=False)
        scale = max(float(np.trace(gram)) / len(gram), 1e-12)
        if self._penalty_matrix is None:
            self._penalty_matrix = self._penalty()
        system = gram + self.smoothness * scale * self._penalty_matrix
        system[np.diag_indices_from(system)] += 1e-9 * scale
        # A few hundred unknowns: threads only contend (measured 0.2 s a
        # solve with two BLAS threads on a busy 2-core machine, 8 ms with one).
        with threadpool_limits(1):
            self.coef = np.linalg.solve(system, rhs).reshape(self.sizes)
        return self

    def _contract(self, values, *, pairs):
        """``sum_i v_i phi_i`` (``pairs=False``) or ``sum_i v_i phi_i phi_i^T``, flattened."""
        factors = []
        for basis in self.bases:
            if pairs:
                basis = (basis[:, :, None] * basis[:, None, :]).reshape(len(basis), -1)
            factors.append(basis)
        out = values
        for f in reversed(factors):
            # Contract the last grid axis; the new coefficient axis goes first.
            out = np.moveaxis(np.tensordot(out, f, axes=([out.ndim - 1], [0])), -1, 0)
        # Each contraction put its coefficient axis first, the last axis
        # going last: out is (c_first, ..., c_last).
        if not pairs:
            return out.reshape(-1)
        n = len(self.sizes)
        out = out.reshape(sum(((s, s) for s in self.sizes), ()))
        order = tuple(range(0, 2 * n, 2)) + tuple(range(1, 2 * n, 2))
        p = math.prod(self.sizes)
        return out.transpose(order).reshape(p, p)
