"""Brain tissue classification as a :class:`Segmentation`: what the ``t1`` preset runs.

:func:`segment_tissue` reads the image and its mask, runs
:func:`gmmseg.tissue.classify_tissue` (bias field, partial volume,
composition prior) and wraps the result as a :class:`TissueSegmentation`:
the labels, the tissue fractions as ``proba`` (FAST's ``pve`` maps), the
bias field, the restored image, and per-class volumes weighted by the
fractions.  Its extra maps are written by ``save`` as ``STEM_pve``,
``STEM_bias`` and ``STEM_restored`` in the input's format.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import postprocess, tissue
from ..errors import GmmsegError
from ..features import FeatureExtractor
from ..mixture import GaussianMixture
from . import outputs
from .result import Segmentation
from .segment import _stopwatch, read_valid

#: Arguments of :func:`gmmseg.segment` that the tissue method takes; the
#: rest (features, covariance, PCA, the mixture's fitting options) belong to
#: the feature mixture it does not run.
TISSUE_ARGUMENTS = frozenset({
    "n_components", "mask", "smoothing", "random_state", "min_region_size", "n_jobs",
    "channel_axis", "spacing", "tol", "bias_field", "partial_volume", "knot_distance",
    "denoise"})


@dataclass(eq=False)
class TissueSegmentation(Segmentation):
    """A :class:`Segmentation` of tissues, with the maps FAST writes.

    Attributes
    ----------
    proba : (..., K) float32 ndarray
        Partial-volume fraction of every tissue (FAST's ``pve_k``): sums to 1
        at valid voxels; ``labels`` is its argmax.
    bias_field : (...) float32 ndarray
        The estimated multiplicative bias field (1 where none was estimated).
    restored : (...) float32 ndarray
        The image divided by the bias field.
    """

    bias_field: np.ndarray = field(default=None, repr=False)
    restored: np.ndarray = field(default=None, repr=False)

    @property
    def extra_maps(self):
        """Maps ``save`` writes besides the standard set: kind -> array."""
        return {"pve": self.proba, "bias": self.bias_field, "restored": self.restored}

    def output_paths(self, out_dir, stem=None, **options):
        """:meth:`Segmentation.output_paths`, with the ``pve``, ``bias`` and ``restored`` maps."""
        paths = super().output_paths(out_dir, stem, **options)
        extra = outputs.output_paths(self.image, out_dir, stem or self.image.name,
                                     extra=tuple(self.extra_maps))
        paths.update({kind: extra[kind] for kind in self.extra_maps})
        return paths

    def stats(self):
        """Per-class statistics, plus the fraction-weighted voxel count and volume.

        ``pv_voxels`` is the sum of the class's partial-volume fraction over
        the valid voxels (FAST's partial-volume-weighted volume, in voxels);
        ``pv_volume_mm3`` and ``pv_volume_ml`` give it in physical units
        when the image has a voxel spacing.
        """
        rows = super().stats()
        totals = self.proba[self.valid].sum(axis=0, dtype=np.float64)
        spacing = self.image.spacing
        voxel_mm3 = math.prod(spacing) if spacing else None
        for row, total in zip(rows, totals):
            row["pv_voxels"] = float(total)
            if voxel_mm3 is not None:
                row["pv_volume_mm3"] = float(total * voxel_mm3)
                row["pv_volume_ml"] = float(total * voxel_mm3 / 1000.0)
        return rows


def segment_tissue(image, n_components=3, *, mask=None, smoothing=tissue.DEFAULT_BETA,
                   bias_field=True, partial_volume=True,
                   knot_distance="auto", denoise=True, random_state=0,
                   min_region_size=0, n_jobs=None, tol=1e-3, channel_axis=-1, spacing=None):
    """Classify a single-channel scan into tissues (the ``t1`` preset's method).

    Parameters
    ----------
    image : Image, ndarray or path
        One channel; a 2-D image or a volume.  Never modified.
    n_components : int, default=3
        Tissue classes, darkest first (T1: CSF, GM, WM).
    mask : bool ndarray, path or "nonzero", optional
        Voxels to classify (see :func:`gmmseg.io.resolve_mask`), combined
        with the image's own validity mask.
    smoothing : float, default=1.0
        Strength of the tissue prior (:mod:`gmmseg.tissue.prior`); 0: none.
    bias_field, partial_volume : bool, default=True
        Estimate a bias field; model partial-volume voxels.
    knot_distance : float or "auto", default="auto"
        Knot distance of the bias field's B-splines, in mm (pixels if the
        image has no spacing); ``"auto"``: 100 mm where a first estimate
        finds a strong field, else 200 (see :func:`gmmseg.tissue.classify_tissue`).
    denoise : bool, default=True
        Classify after edge-preserving diffusion scaled to the noise
        estimated in the mask (:mod:`gmmseg.tissue.denoise`).
    random_state, n_jobs :
        Accepted for symmetry with :func:`gmmseg.segment`; the method is
        deterministic and runs in NumPy.
    min_region_size : int, default=0
        Merge connected regions of fewer voxels into a neighbour.
    tol : float, default=1e-3
        Convergence tolerance of the bias-field iterations.
    channel_axis, spacing :
        As in :func:`gmmseg.segment`, for arrays.

    Returns
    -------
    TissueSegmentation
    """
    del random_state, n_jobs  # deterministic, NumPy-threaded
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 2:
        raise ValueError(
            f"n_components must be an integer >= 2 for tissue classification, got "
            f"{n_components!r}")
    timings = {}
    t0 = time.perf_counter()
    img, where, valid, n_valid = read_valid(image, mask, timings, channel_axis=channel_axis,
                                            spacing=spacing)
    if img.n_channels != 1:
        raise GmmsegError(f"{where}tissue classification needs a single-channel image, got "
                          f"{img.n_channels} channels")
    with _stopwatch(timings, "fit"):
        try:
            result = tissue.classify_tissue(
                img.data[..., 0], valid, n_classes=n_components, spacing=img.spacing,
                beta=float(smoothing), bias=bool(bias_field), knot_distance=knot_distance,
                partial_volume=bool(partial_volume), denoise=bool(denoise), tol=tol)
        except ValueError as err:
            raise GmmsegError(f"{where}{err}") from err
    labels = result.labels
    if min_region_size and min_region_size > 1:
        labels = postprocess.remove_small_regions(labels, int(min_region_size))
    proba = np.ascontiguousarray(np.moveaxis(result.fractions, 0, -1))
    model = _as_mixture(result)
    extractor = FeatureExtractor("gray", standardize=False).fit(
        img, valid=valid, sample=10_000, random_state=0)
    timings["total"] = time.perf_counter() - t0
    info = {
        "n_valid": n_valid,
        "mean_log_likelihood": float(np.nanmean(result.log_likelihood, dtype=np.float64)),
        "fit_samples": n_valid, "random_state": None, "pretrained": False,
        "min_region_size": int(min_region_size or 0), "smoothing": float(smoothing),
        "smoothing_energies": None, "smoothing_iterations": 0, "model_selection": None,
        "timings": timings, "tissue": _tissue_info(result, bias_field, partial_volume,
                                                   knot_distance, denoise),
    }
    return TissueSegmentation(labels, proba, result.log_likelihood, model, extractor, img,
                              info, bias_field=result.bias, restored=result.restored)


def _as_mixture(result):
    """The pure classes as a fitted 1-D :class:`GaussianMixture` (for the report and apply)."""
    pv = result.model
    n = pv.n_pure
    model = GaussianMixture(n, covariance_type="full")
    weights = np.asarray(pv.weights[:n], dtype=np.float64)
    model.reg_covar_ = model.reg_covar
    model._set_params_from_covariances(weights / weights.sum(), pv.means[:, None].copy(),
                                       pv.variances[:, None, None].copy())
    model.n_features_in_ = 1
    model.converged_ = bool(result.converged)
    model.n_iter_ = int(result.n_iter)
    model.lower_bound_ = float(np.nanmean(result.log_likelihood, dtype=np.float64))
    return model


def _tissue_info(result, bias_field, partial_volume, knot_distance, denoise):
    """The report's ``"tissue"`` entry: the intensity model and the options."""
    pv = result.model
    return {
        "method": "bias field + partial volume + composition prior (FAST-like)",
        "means": pv.means.tolist(), "stds": np.sqrt(pv.variances).tolist(),
        "class_weights": pv.weights.tolist(),
        "classes": [f"pure {k}" for k in range(pv.n_pure)]
                   + [f"mixed {a}/{a + 1}" for a in range(pv.n_mixed)],
        "fraction_weights": pv.fraction_weights.tolist(),
        "bias_field": bool(bias_field), "partial_volume": bool(partial_volume),
        "knot_distance_mm": (float(result.info["knot_distance"]) if bias_field else None),
        "knot_distance_option": (None if not bias_field else knot_distance
                                 if isinstance(knot_distance, str) else float(knot_distance)),
        "field_span": result.info["field_span"],
        "denoise": bool(denoise), "noise_sigma": float(result.info["noise_sigma"]),
        "iterations": int(result.n_iter), "converged": bool(result.converged),
    }
