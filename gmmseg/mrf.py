"""A Potts prior on the label field, inferred by mean field inside EM.

The observation model (any mixture with ``component_log_prob`` and
``m_step``, i.e. :class:`gmmseg.GaussianMixture`) and the spatial prior are
kept apart, as in dipy's ``TissueClassifierHMRF``: this module only sees the
per-pixel log-likelihoods ``L[k, i] = log p(x_i | k)`` on the pixel
grid and returns responsibilities ``q[k, i]``; the mixture re-estimates its
parameters from them ("neighbourhood EM" / HMRF-EM, Zhang, Brady & Smith
2001).

Mean field maximises the free energy

    F(q, theta) = sum_i sum_k q_ik L_ik
                + beta / 2 * sum_i sum_{j ~ i} w_ij q_i . q_j
                - sum_i sum_k q_ik log q_ik

whose coordinate-ascent step for one pixel is
``q_i = softmax(L_i + beta * sum_j w_ij q_j)``.  Pixels are updated one
parity class at a time (a 2 x 2 or 2 x 2 x 2 colouring in which no two
pixels of a class are neighbours), so every half-sweep is an exact block
coordinate ascent and F never decreases; the M-step maximises F over the
mixture parameters, so it never decreases there either.  Invalid pixels hold
``q = 0``: they neither vote nor receive a label.

Everything is vectorised over the grid: neighbour sums are 3 x 3 filters
(OpenCV), parity classes are strided views, and arrays are component-major
``(K, ...)`` so that the softmax reduces over the first axis; memory is
O(pixels x K).
"""

from __future__ import annotations

import itertools
import logging

import cv2
import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

CONNECTIVITIES = {2: (4, 8), 3: (6, 26)}


def neighbourhood(ndim, connectivity=None, spacing=None):
    """Neighbour offsets and their weights.

    Parameters
    ----------
    ndim : {2, 3}
    connectivity : int, optional
        4 or 8 in 2-D, 6 or 26 in 3-D (default 8 and 26).
    spacing : sequence of float, optional
        Physical pixel size per axis.  Each neighbour is weighted by
        ``min(spacing) / distance``, so the nearest neighbours weigh 1 and a
        slice 3 mm away weighs less than an in-plane pixel 1 mm away.

    Returns
    -------
    offsets : (M, ndim) ndarray of int
    weights : (M,) ndarray of float
    """
    if ndim not in CONNECTIVITIES:
        raise ValueError(f"the Potts prior works on 2-D or 3-D grids, got {ndim} dimensions")
    allowed = CONNECTIVITIES[ndim]
    connectivity = allowed[1] if connectivity is None else connectivity
    if connectivity not in allowed:
        raise ValueError(f"connectivity must be one of {allowed} in {ndim}-D, got {connectivity}")
    spacing = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (ndim,) or not np.all(spacing > 0):
        raise ValueError(f"spacing must hold {ndim} positive numbers, got {spacing}")
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=ndim) if any(o)]
    if connectivity == 2 * ndim:  # face neighbours only
        offsets = [o for o in offsets if sum(map(abs, o)) == 1]
    offsets = np.array(offsets)
    distance = np.sqrt(((offsets * spacing) ** 2).sum(1))
    return offsets, spacing.min() / distance


class PottsField:
    """Responsibilities on the pixel grid with a Potts prior.

    Parameters
    ----------
    log_prob : (K, *grid) ndarray
        Unary term ``log w_k + log p(x_i | k)``; must be finite (any value)
        at invalid pixels, where it is ignored.
    valid : (*grid) bool ndarray
    beta : float
        Strength of the prior (0 gives the plain mixture posterior).
    connectivity, spacing :
        See :func:`neighbourhood`.
    """

    def __init__(self, log_prob, valid, beta, *, connectivity=None, spacing=None):
        if beta < 0:
            raise ValueError(f"beta (smoothing) must be >= 0, got {beta}")
        self.valid = np.asarray(valid, dtype=bool)
        self.shape = self.valid.shape
        self.beta = float(beta)
        offsets, weights = neighbourhood(len(self.shape), connectivity, spacing)
        # One 3 x 3 kernel per slice offset (just dz = 0 in 2-D), applied with
        # OpenCV's filter2D: far faster than shifted-slice sums in numpy.
        self._kernels = {}
        for off, w in zip(offsets, weights):
            dz = int(off[0]) if len(self.shape) == 3 else 0
            kernel = self._kernels.setdefault(dz, np.zeros((3, 3), dtype=np.float32))
            kernel[off[-2] + 1, off[-1] + 1] = w
        self.log_prob = log_prob
        self._all_valid = bool(self.valid.all())
        self.q = _softmax(log_prob.copy())
        if not self._all_valid:
            self.q *= self.valid
        self._classes = list(itertools.product((0, 1), repeat=len(self.shape)))
        self._buffer = np.empty_like(self.q)

    def neighbour_sum(self, out=None):
        """``sum_j w_ij q_j`` for every pixel, ``(K, *grid)``; zero outside."""
        out = np.empty_like(self.q) if out is None else out
        border = cv2.BORDER_CONSTANT
        if len(self.shape) == 2:
            for k in range(self.q.shape[0]):
                cv2.filter2D(self.q[k], -1, self._kernels[0], dst=out[k], borderType=border)
            return out
        n_slices = self.shape[0]
        for k in range(self.q.shape[0]):
            for z in range(n_slices):
                acc = out[k, z]
                cv2.filter2D(self.q[k, z], -1, self._kernels[0], dst=acc, borderType=border)
                for dz in (-1, 1):
                    if 0 <= z + dz < n_slices and dz in self._kernels:
                        acc += cv2.filter2D(self.q[k, z + dz], -1, self._kernels[dz],
                                            borderType=border)
        return out

    def sweep(self, n_sweeps=1):
        """Mean-field coordinate ascent, one parity class at a time."""
        if self.beta == 0.0:
            return  # q already is the posterior; nothing couples the pixels
        for _ in range(n_sweeps):
            for parity in self._classes:
                grid = (slice(None),) + tuple(slice(p, None, 2) for p in parity)
                total = self.neighbour_sum(out=self._buffer)
                # A contiguous copy of the strided parity class: the
                # arithmetic and exp below run twice as fast on it.
                a = np.multiply(total[grid], np.float32(self.beta), dtype=total.dtype)
                a += self.log_prob[grid]
                q = _softmax(a)
                if not self._all_valid:
                    q *= self.valid[grid[1:]]
                self.q[grid] = q

    def energy(self):
        """Mean free energy F per valid pixel (see the module docstring)."""
        q = self.q
        n_valid = max(1, int(np.count_nonzero(self.valid)))
        log_prob = self.log_prob if self._all_valid else self.log_prob * self.valid
        unary = float(np.vdot(q, log_prob))
        pairwise = 0.5 * self.beta * float(np.vdot(q, self.neighbour_sum(out=self._buffer)))
        # q log q with 0 log 0 = 0: the floor only ever multiplies a zero
        # (scipy's xlogy is 2.5x slower on float32).
        q_log_q = np.log(np.maximum(q, np.finfo(q.dtype).tiny))
        q_log_q *= q
        entropy = -float(q_log_q.sum(dtype=np.float64))
        return (unary + pairwise + entropy) / n_valid


def _softmax(a):
    """Softmax over axis 0, in place."""
    a -= a.max(axis=0)
    np.exp(a, out=a)
    a /= a.sum(axis=0)
    return a


def _to_grid(values, valid):
    """``(K, n_valid)`` rows to a ``(K, *grid)`` array, 0 at invalid pixels."""
    if values.shape[1] == valid.size:
        return values.reshape((values.shape[0],) + valid.shape)
    grid = np.zeros((values.shape[0], valid.size), dtype=values.dtype)
    grid[:, np.flatnonzero(valid)] = values
    return grid.reshape((values.shape[0],) + valid.shape)


def _from_grid(grid, valid):
    flat = grid.reshape(grid.shape[0], -1)
    if valid.all():
        return np.ascontiguousarray(flat)
    return flat[:, np.flatnonzero(valid)]


def local_mean(X, valid, *, spacing=None, sigma=1.0):
    """Features averaged over a small Gaussian neighbourhood of each pixel.

    A start for HMRF-EM: a mixture fitted on locally averaged features sees
    the regions rather than the noise, and EM with the prior then refines it
    on the real features (on heavy noise the plain mixture's optimum is often
    a poor start that the prior cannot leave).  Averages are normalised over
    valid pixels only, so invalid pixels do not leak in.

    Parameters
    ----------
    X : (n_valid, D) ndarray
    valid : (*grid) bool ndarray
    spacing : sequence of float, optional
        Physical pixel size; ``sigma`` is in units of the smallest spacing.
    sigma : float
        Width of the Gaussian, in pixels.

    Returns
    -------
    (n_valid, D) ndarray, same dtype as ``X``
    """
    ndim = valid.ndim
    spacing = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    sigmas = sigma * spacing.min() / spacing
    weight = valid.astype(np.float32)

    def blur(a):
        if ndim == 2 and np.allclose(sigmas, sigmas[0]):
            return cv2.GaussianBlur(a, (0, 0), float(sigmas[0]), borderType=cv2.BORDER_REFLECT)
        return ndimage.gaussian_filter(a, sigmas, mode="reflect")

    norm = np.maximum(blur(weight), 1e-6)
    grid = _to_grid(np.ascontiguousarray(X.T, dtype=np.float32), valid)
    out = np.empty((X.shape[1], int(np.count_nonzero(valid))), dtype=np.float32)
    for d in range(X.shape[1]):
        averaged = blur(grid[d] * weight)
        averaged /= norm
        out[d] = averaged[valid]
    return np.ascontiguousarray(out.T, dtype=X.dtype)


def _unary(model, X, valid):
    """``log p(x_i | k)`` on the grid, without the mixing weights.

    In the HMRF model the Potts prior takes the place of the mixing weights;
    keeping ``log w_k`` as well lets a majority class feed on itself until
    the minority components die out.
    """
    log_prob = model.component_log_prob(X)
    with np.errstate(divide="ignore"):
        log_prob -= np.log(model.weights_).astype(log_prob.dtype)[:, None]
    return _to_grid(log_prob, valid)


def hmrf_em(model, X, valid, beta, *, connectivity=None, spacing=None, max_iter=10,
            n_sweeps=2, tol=1e-3, update_model=True):
    """EM with a Potts prior: mean-field E-steps, mixture M-steps.

    Parameters
    ----------
    model : GaussianMixture
        A fitted mixture (the starting point); updated in place.
    X : (n_valid, D) ndarray
        Features of the valid pixels, in C order of ``valid``.
    valid : (*grid) bool ndarray
    beta : float
        Prior strength; 0 returns the plain mixture posterior unchanged.
    connectivity, spacing :
        See :func:`neighbourhood`.
    max_iter : int
        Outer EM iterations.
    n_sweeps : int
        Mean-field sweeps per E-step.
    tol : float
        Stop when the mean free energy per pixel changes by less than this
        (the same scale as the mixture's ``tol`` on the mean log-likelihood).
    update_model : bool
        False keeps the mixture parameters fixed (a shared, pre-fitted model
        whose labels must keep their meaning): only the E-step runs.

    Returns
    -------
    q : (K, *grid) ndarray
        Responsibilities under the prior; 0 at invalid pixels.
    energies : list of float
        Mean free energy at the start, after each EM iteration and after
        the final E-step (non-decreasing); ``len(energies) - 2`` iterations
        ran (one entry when ``beta`` is 0).
    """
    field = PottsField(_unary(model, X, valid), valid, beta,
                       connectivity=connectivity, spacing=spacing)
    if beta == 0.0:
        return field.q, [field.energy()]
    energies = [field.energy()]
    for iteration in range(max_iter):
        field.sweep(n_sweeps)
        if update_model:
            model.m_step(X, _from_grid(field.q, valid))
            field.log_prob = _unary(model, X, valid)
        energies.append(field.energy())
        logger.debug("HMRF iteration %d: free energy %.6f", iteration + 1, energies[-1])
        if abs(energies[-1] - energies[-2]) < tol:
            break
    field.sweep(n_sweeps)  # responsibilities consistent with the final parameters
    energies.append(field.energy())
    return field.q, energies

