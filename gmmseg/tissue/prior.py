"""A spatial prior on tissue composition, inferred by mean field.

Neighbouring voxels tend to hold the same tissue.  The prior rewards a
class at a voxel by how much its tissue composition (pure CSF ``(1, 0, 0)``,
CSF/GM ``(0.5, 0.5, 0)``, ...; see :func:`.partial_volume.compositions`)
agrees with the *average* composition of its neighbours:

    q_ik  ∝  w_k p(y_i | k) exp(beta * c_k . m_i),
    m_i = sum_j a_ij sum_l q_jl c_l / sum_j a_ij

So a pure class inside its own tissue gets ``+beta``, a mixed class half
of it, and a voxel on a flat border between two tissues gets the same
reward for both: the prior does not move borders, it removes voxels that
disagree with their surroundings.  Because ``m_i`` is an average (the
weights ``a_ij`` are normalised over the valid neighbours), ``beta`` means
the same with 6, 18 or 26 neighbours, in 2-D or 3-D, and at the edge of the
mask: it is the log-odds a voxel gains when all its neighbours agree with
it, on the same scale as the mixing weights ``log w_k``, which stay in the
model (the prior modulates the class proportions; it does not replace them).

The neighbourhood is the 3 x 3 x 3 block with separable weights
``exp(-d^2 / 2)`` per axis (``d``: offset in units of the finest spacing),
so face, edge and corner neighbours weigh 0.61, 0.37 and 0.22 in an
isotropic volume and a slice twice as far weighs less.  It costs one
separable 2-D filter per slice and two shifted sums per composition
channel.  Voxels are updated in two
interleaved halves (``z + y + x`` even, then odd), a block coordinate
ascent for the face neighbours.  Knows no intensities.
"""

from __future__ import annotations

import cv2
import numpy as np

from .partial_volume import softmax

#: Default prior strength: the log-odds a voxel gains when all its
#: neighbours agree with it.  Chosen on the clean MNI152 template and a
#: noisy phantom, confirmed on the corrupted templates
#: (``scripts/tissue_quality.py``).
DEFAULT_BETA = 1.0


class CompositionPrior:
    """Mean-field updates of tissue responsibilities on a grid.

    Parameters
    ----------
    valid : (Z, Y, X) or (Y, X) bool ndarray
        The voxels being classified.
    composition : (n_classes, n_tissues) ndarray
        Tissue composition of every class.
    beta : float
        Strength (see the module docstring); 0 switches the prior off.
    spacing : tuple of float, optional
        Voxel size per axis.
    """

    def __init__(self, valid, composition, beta, *, spacing=None):
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        self.valid = np.asarray(valid, dtype=bool)
        self.index = np.flatnonzero(self.valid)
        self.composition = np.asarray(composition, dtype=np.float32)
        self.beta = float(beta)
        spacing = np.ones(self.valid.ndim) if spacing is None else np.asarray(spacing, float)
        self.taps = [np.array([w, 1.0, w]) for w in np.exp(-0.5 * (spacing / spacing.min()) ** 2)]
        parity = sum(np.ogrid[tuple(slice(0, n) for n in self.valid.shape)]) % 2
        parity = np.broadcast_to(parity, self.valid.shape).reshape(-1)[self.index]
        self.halves = [np.flatnonzero(parity == p) for p in (0, 1)]
        norm = self._neighbour_sum(self.valid.astype(np.float32))
        self.norm = np.maximum(norm.reshape(-1)[self.index], np.float32(1e-6))

    def _neighbour_sum(self, grid):
        """``sum_j a_ij g_j`` over the neighbours (the voxel itself left out), float32.

        The last two axes in one separable OpenCV filter per slice (several
        times faster than three SciPy passes), the first by shifted sums.
        """
        grid = np.ascontiguousarray(grid, dtype=np.float32)
        ky, kx = (t.astype(np.float32) for t in self.taps[-2:])
        out = np.empty_like(grid)
        planes = grid.reshape((-1,) + grid.shape[-2:])
        for src, dst in zip(planes, out.reshape(planes.shape)):
            cv2.sepFilter2D(src, -1, kx, ky, dst=dst, borderType=cv2.BORDER_CONSTANT)
        if grid.ndim == 3 and grid.shape[0] > 1:
            w = np.float32(self.taps[0][0])
            flat = out.copy()
            out[1:] += w * flat[:-1]
            out[:-1] += w * flat[1:]
        out -= grid
        return out

    def neighbour_composition(self, q):
        """``m_i``: the neighbours' mean tissue composition, ``(n_tissues, N)``.

        Its channels sum to 1 (each voxel's composition does, and the mean is
        over the valid neighbours), so the last one is not filtered.
        """
        mix = self.composition.T @ q                        # (n_tissues, N)
        mean = np.empty_like(mix)
        grid = np.zeros(self.valid.size, dtype=np.float32)
        for c in range(len(mix) - 1):
            grid[self.index] = mix[c]
            mean[c] = self._neighbour_sum(grid.reshape(self.valid.shape)).reshape(-1)[self.index]
            mean[c] /= self.norm
        mean[-1] = 1.0 - mean[:-1].sum(axis=0)
        return mean

    def agreement(self, q):
        """``beta * c_k . m_i`` for every class and valid voxel, ``(n_classes, N)``."""
        return (self.beta * self.composition) @ self.neighbour_composition(q)

    def sweep(self, log_prob, q, n_sweeps=1):
        """Mean-field sweeps: ``q`` updated in place from ``log_prob`` and the neighbours."""
        if self.beta == 0.0:
            q[...] = softmax(log_prob.copy())
            return q
        for _ in range(n_sweeps):
            for half in self.halves:
                a = self.agreement(q)[:, half]
                a += log_prob[:, half]
                q[:, half] = softmax(a)
        return q
