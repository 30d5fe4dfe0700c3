"""``segment``: image in, :class:`Segmentation` out.

Glues reading, features, the mixture and postprocessing together; parses no
command-line options (that is ``cli.py``'s job).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import mrf, postprocess
from .errors import GmmsegError, OutputExistsError
from .features import FeatureExtractor
from .io import Image, as_image, result_suffix, write_json, write_png, write_result_map
from .mixture import GaussianMixture

logger = logging.getLogger(__name__)

#: Default number of valid pixels the mixture is fitted on; every pixel is
#: still labelled.  See the README's "Subsampling" figures for its quality cost.
DEFAULT_MAX_FIT_SAMPLES = 150_000


@dataclass(eq=False)
class Segmentation:
    """The result of :func:`segment`.

    Attributes
    ----------
    labels : (H, W) or (Z, H, W) int32 ndarray
        Segment of every pixel in canonical component order, -1 where the
        pixel is invalid (alpha, NaN, nodata, outside ``mask``).
    proba : (..., K) float32 ndarray
        Responsibilities; 0 at invalid pixels.
    log_likelihood : (...) float32 ndarray
        Per-pixel log density under the mixture (low = unusual); NaN at
        invalid pixels.
    model : GaussianMixture
        The fitted (or given) mixture, components in canonical order.
    features : FeatureExtractor
        The fitted feature extractor the model's inputs came from.
    image : Image
        The segmented image.
    info : dict
        Fit details and timings in seconds.
    """

    labels: np.ndarray
    proba: np.ndarray
    log_likelihood: np.ndarray
    model: GaussianMixture
    features: FeatureExtractor
    image: Image
    info: dict = field(default_factory=dict)

    @property
    def n_components(self):
        return self.model.n_components

    @property
    def valid(self):
        return self.labels >= 0

    def _slice_index(self, slice_index):
        if self.labels.ndim == 2:
            return None
        z = self.labels.shape[0] // 2 if slice_index is None else int(slice_index)
        if not 0 <= z < self.labels.shape[0]:
            raise ValueError(f"slice_index must be in 0..{self.labels.shape[0] - 1}, got {z}")
        return z

    def overlay(self, alpha=0.5, *, boundaries=True, slice_index=None, bands=None):
        """Segment colours blended over the image, ``(H, W, 3)`` uint8.

        For volumes one slice is shown (the middle one unless
        ``slice_index`` is given).  Non-8-bit data is percentile-stretched
        for display only.
        """
        z = self._slice_index(slice_index)
        data, labels = self.image.data, self.labels
        if z is not None:
            data, labels = data[z], labels[z]
        rgb = postprocess.display_rgb(data, labels >= 0, bands=bands)
        return postprocess.overlay(rgb, labels, alpha=alpha, boundaries=boundaries)

    def stats(self):
        """Per-segment pixel count, share and mean/std in the input's units."""
        return postprocess.segment_stats(
            self.labels, self.image.data, self.n_components, valid=self.labels >= 0)

    def report(self):
        """Everything worth recording about this segmentation, JSON-ready."""
        from . import __version__

        model = self.model
        n_valid = int(self.info["n_valid"])
        mean_ll = float(self.info["mean_log_likelihood"])
        n_params = model._n_parameters()
        img = self.image
        return {
            "gmmseg_version": __version__,
            "input": {
                "path": str(img.path) if img.path else None,
                "shape": list(img.data.shape),
                "dtype": str(img.data.dtype),
                "channels": list(img.channels),
                "spacing": list(img.spacing) if img.spacing else None,
                "valid_pixels": n_valid,
                "valid_share": n_valid / max(1, math.prod(img.spatial_shape)),
            },
            "features": {
                "spec": self.features.spec_string,
                "names": list(self.features.names_),
                "n_features": int(self.features.n_features_),
                "standardize": self.features.standardize,
                "pca": self.features.pca,
            },
            "model": {
                "n_components": int(model.n_components),
                "covariance_type": model.covariance_type,
                "weights": model.weights_.tolist(),
                "means": model.means_.tolist(),
                "covariances": model.covariances_.tolist(),
                "converged": bool(getattr(model, "converged_", True)),
                "n_iter": int(getattr(model, "n_iter_", 0)),
                "fit_samples": self.info.get("fit_samples"),
                "fit_lower_bound": float(getattr(model, "lower_bound_", float("nan"))),
                "reg_covar": float(getattr(model, "reg_covar_", model.reg_covar)),
                "random_state": self.info.get("random_state"),
                "pretrained": self.info.get("pretrained", False),
            },
            "mean_log_likelihood": mean_ll,
            "bic": -2.0 * mean_ll * n_valid + n_params * math.log(max(n_valid, 1)),
            "aic": -2.0 * mean_ll * n_valid + 2.0 * n_params,
            "min_region_size": self.info.get("min_region_size", 0),
            "smoothing": self.info.get("smoothing", 0.0),
            "segments": self.stats(),
            "timings": dict(self.info.get("timings", {})),
        }

    def output_paths(self, out_dir, stem=None, *, proba=False, log_likelihood=False):
        """The files :meth:`save` writes, by kind."""
        out_dir = Path(out_dir)
        stem = stem or self.image.name
        float_suffix = result_suffix(self.image, "float")
        paths = {
            "labels": out_dir / f"{stem}_labels{result_suffix(self.image, 'labels')}",
            "overlay": out_dir / f"{stem}_overlay.png",
            "report": out_dir / f"{stem}_report.json",
        }
        if proba:
            paths["proba"] = out_dir / f"{stem}_proba{float_suffix}"
        if log_likelihood:
            paths["log_likelihood"] = out_dir / f"{stem}_loglik{float_suffix}"
        return paths

    def save(self, out_dir, stem=None, *, overwrite=False, proba=False,
             log_likelihood=False, alpha=0.5):
        """Write label map, overlay and report (and optional float maps).

        Files are ``{stem}_labels.png`` (uint8, uint16 if K > 255; formats
        with geometry keep it, see :func:`gmmseg.io.result_suffix`),
        ``{stem}_overlay.png``, ``{stem}_report.json`` and on request
        ``{stem}_proba.tif`` (float32, ``(..., K)``) and ``{stem}_loglik.tif``
        (float32, NaN where invalid).
        Nothing is written if any target exists and ``overwrite`` is False;
        each file is written to a temporary name and renamed, and files this
        call wrote are removed again if a later one fails.

        Returns
        -------
        dict of str to Path
        """
        paths = self.output_paths(out_dir, stem, proba=proba, log_likelihood=log_likelihood)
        if not overwrite:
            existing = [str(p) for p in paths.values() if p.exists()]
            if existing:
                raise OutputExistsError(
                    f"{existing[0]}: output exists (use --overwrite / overwrite=True)")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        written = []
        try:
            write_result_map(paths["labels"], self.labels, self.image,
                             n_components=self.n_components, overwrite=overwrite)
            written.append(paths["labels"])
            write_png(paths["overlay"], self.overlay(alpha), overwrite=overwrite)
            written.append(paths["overlay"])
            if proba:
                write_result_map(paths["proba"], self.proba, self.image, overwrite=overwrite)
                written.append(paths["proba"])
            if log_likelihood:
                write_result_map(paths["log_likelihood"], self.log_likelihood, self.image,
                                 overwrite=overwrite)
                written.append(paths["log_likelihood"])
            self.info.setdefault("timings", {})["write"] = time.perf_counter() - t0
            write_json(paths["report"], self.report(), overwrite=overwrite)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        return paths


def _combined_mask(img, mask):
    if mask is None:
        return img.valid
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != img.spatial_shape:
        raise ValueError(
            f"mask must be a bool array of shape {img.spatial_shape}, got "
            f"{mask.dtype} {mask.shape}")
    return img.valid & mask


def _where(img):
    return f"{img.path}: " if img.path else ""


def segment(
    image,
    n_components=4,
    *,
    features="auto",
    covariance_type="full",
    random_state=0,
    max_fit_samples=DEFAULT_MAX_FIT_SAMPLES,
    mask=None,
    model=None,
    feature_extractor=None,
    standardize=True,
    pca=None,
    min_region_size=0,
    smoothing=0.0,
    connectivity=None,
    init_params="k-means++",
    n_init=1,
    max_iter=100,
    tol=1e-3,
    reg_covar=1e-6,
    n_jobs=None,
):
    """Segment an image with a Gaussian mixture over per-pixel features.

    Parameters
    ----------
    image : Image, ndarray or path
        ``(H, W)``, ``(H, W, C)`` or an :class:`~gmmseg.io.Image` (volumes
        ``(Z, H, W, C)`` too), or a file path.  Never modified.
    n_components : int, default=4
        Number of segments K.  Ignored when ``model`` is given.
    features : str, callable or list, default="auto"
        Feature spec (``"lab,position:0.5"``), callables
        ``f(image) -> (..., d)``, or a list of both; "auto" picks ``lab`` for
        RGB photos, ``gray`` for grey images and ``bands`` otherwise.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    random_state : int or None, default=0
        Seeds the subsample and the initialisation: the same seed gives the
        same labels.
    max_fit_samples : int or None, default=150000
        Fit on at most this many randomly chosen valid pixels (None: all);
        every pixel is labelled afterwards.
    mask : bool ndarray of the image's spatial shape, optional
        Pixels to segment; combined with the image's own validity mask.
    model : GaussianMixture, optional
        A fitted mixture to apply instead of fitting one.  Its features come
        from ``feature_extractor`` or, if that is None, from the model's
        ``metadata_["features"]`` (as stored by a saved gmmseg model).
    feature_extractor : FeatureExtractor, optional
        A fitted extractor to reuse (with ``model``).
    standardize, pca :
        Passed to :class:`~gmmseg.features.FeatureExtractor`.
    min_region_size : int, default=0
        Merge connected regions smaller than this many pixels into their
        neighbour.
    smoothing : float, default=0
        Strength ``beta`` of a Potts prior on the label field, inferred by
        mean field inside EM (:mod:`gmmseg.mrf`): neighbouring pixels tend to
        share a segment, which removes speckle from noisy images.  0 is the
        plain per-pixel mixture; about 1 suits noisy images.  With ``model``
        given, the model's parameters are kept and only the labels are
        smoothed.
    connectivity : int, optional
        Neighbourhood of the prior: 4 or 8 (default) in 2-D, 6 or 26
        (default) in 3-D, weighted by the physical pixel spacing.
    init_params, n_init, max_iter, tol, reg_covar, n_jobs :
        Passed to :class:`~gmmseg.mixture.GaussianMixture`.

    Returns
    -------
    Segmentation

    Raises
    ------
    GmmsegError
        The image has no valid pixel, or fewer distinct valid pixels than K.

    Examples
    --------
    >>> img = np.zeros((20, 20, 3), np.uint8); img[:, 10:] = 200
    >>> seg = segment(img, 2, random_state=0)
    >>> seg.labels[0, 0], seg.labels[0, 19]
    (0, 1)
    """
    timings = {}
    t0 = time.perf_counter()
    img = as_image(image)
    timings["read"] = time.perf_counter() - t0
    where = _where(img)
    valid = _combined_mask(img, mask)
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        raise GmmsegError(f"{where}no valid pixels to segment (all masked, NaN or nodata)")

    t = time.perf_counter()
    if model is not None:
        if feature_extractor is None:
            spec = getattr(model, "metadata_", {}).get("features")
            if spec is None:
                raise ValueError("model has no stored feature extractor; pass feature_extractor=")
            feature_extractor = FeatureExtractor.from_dict(spec)
        X = feature_extractor.transform(img, valid=valid)
    else:
        feature_extractor = FeatureExtractor(features, standardize=standardize, pca=pca)
        X = feature_extractor.fit_transform(img, valid=valid, random_state=random_state)
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    pretrained = model is not None
    fit_samples = None
    if model is None:
        params = dict(covariance_type=covariance_type, random_state=random_state,
                      init_params=init_params, n_init=n_init, max_iter=max_iter, tol=tol,
                      reg_covar=reg_covar, n_jobs=n_jobs)
        if smoothing:
            # Start EM with the prior from a mixture of locally averaged
            # features, re-estimated on the real ones (see mrf.local_mean).
            X_start = mrf.local_mean(X, valid, spacing=img.spacing)
            model, fit_samples = _fit(X_start, n_components, where, params, max_fit_samples)
            start = model.e_step(X_start, labels=False, log_likelihood=False).proba
            del X_start
            model.m_step(X, start.T)
            del start
        else:
            model, fit_samples = _fit(X, n_components, where, params, max_fit_samples)
    timings["fit"] = time.perf_counter() - t

    if smoothing:
        t = time.perf_counter()
        q, energies = mrf.hmrf_em(model, X, valid, float(smoothing), connectivity=connectivity,
                                  spacing=img.spacing, tol=tol, update_model=not pretrained)
        if not pretrained:
            q = q[model.sort_components()]
        timings["smoothing"] = time.perf_counter() - t

    t = time.perf_counter()
    result = model.e_step(X, labels=not smoothing, proba=not smoothing)
    del X
    mean_ll = float(result.log_likelihood.mean(dtype=np.float64))
    if smoothing:
        labels = np.where(valid, q.argmax(axis=0).astype(np.int32), -1)
        proba = np.ascontiguousarray(np.moveaxis(q, 0, -1), dtype=np.float32)
        del q
    else:
        labels = postprocess.scatter_valid(result.labels, valid, -1)
        proba = postprocess.scatter_valid(
            result.proba.astype(np.float32, copy=False), valid, 0.0)
    if min_region_size and min_region_size > 1:
        labels = postprocess.remove_small_regions(labels, int(min_region_size))
    log_lik = postprocess.scatter_valid(
        result.log_likelihood.astype(np.float32, copy=False), valid, np.nan)
    timings["predict"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    info = {
        "n_valid": n_valid,
        "mean_log_likelihood": mean_ll,
        "fit_samples": fit_samples,
        "random_state": random_state if isinstance(random_state, (int, type(None))) else None,
        "pretrained": pretrained,
        "min_region_size": int(min_region_size or 0),
        "smoothing": float(smoothing or 0.0),
        "smoothing_energies": energies if smoothing else None,
        "timings": timings,
    }
    logger.info("%ssegmented %d valid pixels into %d segments in %.2f s",
                where, n_valid, model.n_components, timings["total"])
    return Segmentation(labels, proba, log_lik, model, feature_extractor, img, info)


def _fit(X, n_components, where, params, max_fit_samples):
    """Fit a mixture on (a random subsample of) ``X``, components in canonical order."""
    n = len(X)
    rng = np.random.default_rng(params["random_state"])
    if max_fit_samples is not None and n > max_fit_samples:
        rows = np.sort(rng.choice(n, size=int(max_fit_samples), replace=False))
        X_fit = X[rows]
    else:
        X_fit = X
    model = GaussianMixture(n_components, **params)
    try:
        model.fit(X_fit)
    except ValueError as err:
        if "distinct rows" in str(err) or "must be <= n_samples" in str(err):
            raise GmmsegError(
                f"{where}fewer distinct valid pixels than n_components={n_components}; "
                "use a smaller -k") from err
        raise GmmsegError(f"{where}{err}") from err
    model.sort_components()
    return model, len(X_fit)
