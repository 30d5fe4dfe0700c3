"""``segment``: image in, :class:`Segmentation` out.

Glues reading, features, the mixture and postprocessing together; parses no
command-line options (that is ``cli.py``'s job).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import numbers
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import mrf, postprocess
from .errors import GmmsegError, OutputExistsError, TooFewDistinctRowsError
from .features import FeatureExtractor, lab
from .io import (
    Image,
    as_image,
    atomic_output,
    result_suffix,
    write_json,
    write_png,
    write_result_map,
)
from .mixture import GaussianMixture
from .mixture import select_k as select_k_arrays

logger = logging.getLogger(__name__)

#: Default number of valid pixels the mixture is fitted on; every pixel is
#: still labelled.  See the README's "Subsampling" figures for its quality cost.
DEFAULT_MAX_FIT_SAMPLES = 150_000
#: Candidate K of ``n_components="auto"``.
DEFAULT_K_RANGE = (1, 10)
#: Display range of the anomaly heat map: these percentiles of -log p.
_ANOMALY_PERCENTILES = (1.0, 99.5)
_PLOT_HINT = "install it with: pip install 'gmmseg[plot]'"


@dataclass(eq=False)
class Segmentation:
    """The result of :func:`segment`.

    Attributes
    ----------
    labels : (H, W) or (Z, H, W) int32 ndarray
        Segment of every pixel in canonical component order, -1 where the
        pixel is invalid (alpha, NaN, nodata, outside ``mask``).
    proba : (..., K) float32 ndarray
        Responsibilities; 0 at invalid pixels.  ``argmax(proba) == labels``
        except where ``min_region_size`` merged a small region into its
        neighbour: the probabilities stay the model's, the label is the
        cleaned-up one.
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
    _hierarchies: dict = field(default_factory=dict, init=False, repr=False)

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

    def overlay(self, alpha=0.5, *, boundaries=True, slice_index=None, bands=None,
                labels=None):
        """Segment colours blended over the image, ``(H, W, 3)`` uint8.

        For volumes one slice is shown (the middle one unless
        ``slice_index`` is given).  Non-8-bit data is percentile-stretched
        for display only.  ``labels`` draws another map of the image's
        shape instead of :attr:`labels`, e.g. ``seg.regions(8)``.
        """
        z = self._slice_index(slice_index)
        data = self.image.data
        labels = self.labels if labels is None else np.asarray(labels)
        if labels.shape != self.labels.shape:
            raise ValueError(f"labels must have shape {self.labels.shape}, got {labels.shape}")
        if z is not None:
            data, labels = data[z], labels[z]
        rgb = postprocess.display_rgb(data, labels >= 0, bands=bands)
        return postprocess.overlay(rgb, labels, alpha=alpha, boundaries=boundaries)

    def region_hierarchy(self, *, min_size=postprocess.REGION_MIN_SIZE,
                         boundary_weight=postprocess.REGION_BOUNDARY_WEIGHT):
        """Connected regions of :attr:`labels`, merged most alike first.

        See :func:`gmmseg.postprocess.region_hierarchy`; a region is
        modelled as a Gaussian of its CIE Lab colour for RGB photos and of
        its channels (each scaled to unit standard deviation) otherwise.
        Made once per setting and kept.
        """
        key = (min_size, boundary_weight)
        if key not in self._hierarchies:
            self._hierarchies[key] = postprocess.region_hierarchy(
                self.labels, _region_values(self.image, self.valid), min_size=min_size,
                boundary_weight=boundary_weight, spacing=self.image.spacing)
        return self._hierarchies[key]

    def regions(self, n_regions=None, *, scale=None, min_size=postprocess.REGION_MIN_SIZE,
                boundary_weight=postprocess.REGION_BOUNDARY_WEIGHT):
        """The image cut into connected segments: ``n_regions`` of them, or at a scale.

        A label is a mixture component and may cover many separate pieces
        of the image; a region is connected.  The pieces are merged, most
        alike first (:meth:`region_hierarchy`), until ``n_regions`` remain
        or, by default, until the next merge would cost more than ``scale``
        times the costliest merge (:data:`gmmseg.postprocess.REGION_SCALE`,
        0.005), so that each image keeps as many regions as it shows (then
        regions under 1% of the image join a neighbour, see
        :meth:`gmmseg.postprocess.RegionHierarchy.cut`).  Fewer pieces than asked:
        all of them; an image in several separate valid parts keeps at
        least one region per part, and a speck under ``min_size`` pixels
        walled in by invalid pixels gets -1.  On BSDS500 photos regions
        score closer to people's segmentations than the labels do
        (``docs/quality.md``, sections 4, 6 and 7); colour photos get them from
        :meth:`save` by default.

        Returns
        -------
        ndarray of int32, the labels' shape
            Regions ``0 .. n - 1`` in raster order of their first pixel, -1
            at invalid pixels.
        """
        if n_regions is None and scale is None:
            scale = postprocess.REGION_SCALE
        return self.region_hierarchy(min_size=min_size, boundary_weight=boundary_weight).cut(
            n_regions, scale=scale)

    def _regions_meanwhile(self, n_regions, scale):
        """:meth:`regions` started on a second thread; a future of its map.

        At 16 Mpx the regions take about as long as drawing and encoding the
        overlay, and both mostly run in NumPy and OpenCV without holding the
        GIL: :meth:`save` does the two at once.  The worker only computes,
        so an error or Ctrl-C in ``save`` leaves no file behind it; it is a
        daemon thread, so an interrupted process exits without waiting for
        it.  ``save`` writes nothing that captures warnings process-wide
        (GeoTIFF, NIfTI) until it has the map.  Where no thread can start
        (interpreter shutdown), the regions are worked out here.
        """
        future = Future()

        def work():
            future.set_running_or_notify_cancel()
            try:
                future.set_result(self.regions(n_regions, scale=scale))
            except BaseException as err:  # handed to the caller of save
                future.set_exception(err)

        try:
            threading.Thread(target=work, name="gmmseg-regions", daemon=True).start()
        except RuntimeError:  # "can't create new thread at interpreter shutdown"
            work()
        return future

    def _stale_outputs(self, paths, out_dir, stem):
        """Files the report being replaced listed and this save will not write.

        They belong to an earlier run's set (say, regions, before a run
        without them) and would no longer match the new labels.  Only names
        that a save of this image under this stem can write count.
        """
        report = paths["report"]
        try:
            listed = json.loads(report.read_text()).get("outputs")
        except (OSError, ValueError, AttributeError):
            return []
        if not isinstance(listed, dict):
            return []
        every = self.output_paths(out_dir, stem, proba=True, log_likelihood=True,
                                  uncertainty=True, anomaly=True, anomaly_mask=True,
                                  regions="scale")
        ours = {p.name for p in every.values()} - {p.name for p in paths.values()}
        return [report.with_name(name) for name in listed.values()
                if isinstance(name, str) and name in ours]

    def _region_request(self, regions, region_scale):
        """``save``'s ``regions`` option as ``(n_regions, scale)``, or None for no regions."""
        if regions is None or regions is False:
            return None
        if isinstance(regions, str):
            if regions not in ("auto", "scale"):
                raise ValueError(f"regions must be None, 'auto', 'scale' or a number >= 1, "
                                 f"got {regions!r}")
            if not (isinstance(region_scale, numbers.Real) and 0 <= region_scale <= 1):
                raise ValueError(f"region_scale must be a number in [0, 1] (a share of the "
                                 f"costliest merge), got {region_scale!r}")
            if regions == "auto" and not self.image.is_photo:
                return None
            return None, float(region_scale)
        if isinstance(regions, bool) or not isinstance(regions, numbers.Integral) or regions < 1:
            raise ValueError(f"regions must be None, 'auto', 'scale' or a number >= 1, "
                             f"got {regions!r}")
        return int(regions), None

    def stats(self):
        """Per-segment pixel count, share and mean/std in the input's units."""
        return postprocess.segment_stats(
            self.labels, self.image.data, self.n_components, valid=self.labels >= 0)

    @functools.cached_property
    def uncertainty(self):
        """How unsure each pixel's segment is: ``(...)`` float32 in ``[0, 1]``.

        The normalised posterior entropy ``-sum_k p_k log p_k / log K`` of
        :attr:`proba` (see :func:`gmmseg.postprocess.normalized_entropy`): 0
        where one segment takes all the probability, 1 where all K are
        equally likely (0 everywhere when K = 1); NaN at invalid pixels.
        Highest on the borders between segments.  With ``smoothing``, the
        entropy of the smoothed (mean-field) posteriors.
        """
        return postprocess.normalized_entropy(self.proba, valid=self.valid)

    def anomaly_threshold(self, quantile=None, *, threshold=None):
        """The log-likelihood below which :meth:`anomaly_mask` flags a pixel.

        The ``quantile`` of the valid pixels' log-likelihoods (a value that
        occurs, no interpolation), or ``threshold`` itself.  Give exactly one.
        """
        if (quantile is None) == (threshold is None):
            raise ValueError("give exactly one of quantile and threshold")
        if quantile is not None:
            if isinstance(quantile, bool) or not isinstance(quantile, numbers.Real) or not (
                    0.0 < quantile < 1.0):
                raise ValueError(f"quantile must be a number in (0, 1), got {quantile!r}")
            values = self.log_likelihood[self.valid]
            return float(np.quantile(values, float(quantile), method="inverted_cdf"))
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not (
                math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        return float(threshold)

    def anomaly_mask(self, quantile=None, *, threshold=None):
        """Pixels that fit no segment well: ``(...)`` bool.

        True where the pixel's log-likelihood under the mixture
        (:attr:`log_likelihood`) is below its ``quantile`` over the valid
        pixels -- ``anomaly_mask(0.001)`` flags (at most) the 0.1% least
        likely pixels -- or below an absolute log-likelihood ``threshold``
        (comparable between images segmented with one model).  False at
        invalid pixels.

        Examples
        --------
        >>> img = np.zeros((20, 20), np.float32); img[10:] = 1; img[3, 3] = 0.5
        >>> seg = segment(img, 2)
        >>> np.argwhere(seg.anomaly_mask(0.005)).tolist()
        [[3, 3]]
        """
        limit = self.anomaly_threshold(quantile, threshold=threshold)
        with np.errstate(invalid="ignore"):
            return (self.log_likelihood < limit) & self.valid

    def _picture(self, values, **kwargs):
        """A heat-map picture of a per-pixel map (the middle slice of a volume)."""
        valid = self.valid
        z = self._slice_index(None)
        if z is not None:
            values, valid = values[z], valid[z]
        return postprocess.heat_map(values, valid, **kwargs)

    def report(self, *, uncertainty=False, anomaly_quantile=None, anomaly_threshold=None):
        """Everything worth recording about this segmentation, JSON-ready.

        Parameters
        ----------
        uncertainty : bool, default=False
            Add an ``"uncertainty"`` summary (mean and median normalised
            entropy of the valid pixels).
        anomaly_quantile, anomaly_threshold : float, optional
            Add an ``"anomaly"`` entry for :meth:`anomaly_mask` with this
            quantile or threshold: the log-likelihood threshold used, and the
            number and share of valid pixels below it.
        """
        return self._report(self.stats(), uncertainty=uncertainty,
                            anomaly_quantile=anomaly_quantile,
                            anomaly_threshold=anomaly_threshold)

    def _report(self, segments, *, uncertainty, anomaly_quantile, anomaly_threshold):
        """:meth:`report` with the :meth:`stats` already worked out."""
        from . import __version__

        model = self.model
        n_valid = int(self.info["n_valid"])
        mean_ll = float(self.info["mean_log_likelihood"])
        n_params = model._n_parameters()
        img = self.image
        out = {
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
            "smoothing_iterations": self.info.get("smoothing_iterations", 0),
            "segments": segments,
            "timings": dict(self.info.get("timings", {})),
        }
        if self.info.get("model_selection") is not None:
            out["model_selection"] = self.info["model_selection"]
        if uncertainty:
            values = self.uncertainty[self.valid].astype(np.float64)
            out["uncertainty"] = {
                "measure": "normalized posterior entropy",
                "mean": float(values.mean()),
                "median": float(np.median(values)),
            }
        if anomaly_quantile is not None or anomaly_threshold is not None:
            limit = self.anomaly_threshold(anomaly_quantile, threshold=anomaly_threshold)
            n_anomalous = int(np.count_nonzero(self.anomaly_mask(threshold=limit)))
            out["anomaly"] = {
                "quantile": None if anomaly_quantile is None else float(anomaly_quantile),
                "threshold": None if anomaly_threshold is None else float(anomaly_threshold),
                "log_likelihood_threshold": limit,
                "pixels": n_anomalous,
                "share": n_anomalous / max(n_valid, 1),
            }
        return out

    def output_paths(self, out_dir, stem=None, *, proba=False, log_likelihood=False,
                     uncertainty=False, anomaly=False, anomaly_mask=False, regions="auto",
                     region_scale=postprocess.REGION_SCALE):
        """The files :meth:`save` writes with these options, by kind.

        The one place output names are made: ``labels``, ``overlay``,
        ``report`` always; ``proba``, ``log_likelihood`` (also with
        ``anomaly``), ``uncertainty`` (heat map) and ``uncertainty_map``
        (float), ``anomaly`` (heat map), ``anomaly_mask`` and ``regions``
        (with ``regions_overlay``) on request.
        """
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
        if log_likelihood or anomaly:
            paths["log_likelihood"] = out_dir / f"{stem}_loglik{float_suffix}"
        if uncertainty:
            paths["uncertainty"] = out_dir / f"{stem}_uncertainty.png"
            paths["uncertainty_map"] = out_dir / f"{stem}_uncertainty{float_suffix}"
        if anomaly:
            paths["anomaly"] = out_dir / f"{stem}_anomaly.png"
        if anomaly_mask:
            paths["anomaly_mask"] = (
                out_dir / f"{stem}_anomaly_mask{result_suffix(self.image, 'labels')}")
        if self._region_request(regions, region_scale) is not None:
            paths["regions"] = out_dir / f"{stem}_regions{result_suffix(self.image, 'labels')}"
            paths["regions_overlay"] = out_dir / f"{stem}_regions_overlay.png"
        return paths

    def save(self, out_dir, stem=None, *, overwrite=False, proba=False,
             log_likelihood=False, alpha=0.5, uncertainty=False, anomaly=False,
             anomaly_quantile=None, anomaly_threshold=None, regions="auto",
             region_scale=postprocess.REGION_SCALE):
        """Write label map, overlay and report (and optional maps).

        Files are ``{stem}_labels.png`` (uint8, uint16 if K > 255; formats
        with geometry keep it, see :func:`gmmseg.io.result_suffix`),
        ``{stem}_overlay.png``, ``{stem}_report.json`` and on request:

        * ``proba``: ``{stem}_proba.tif`` (float32, ``(..., K)``);
        * ``log_likelihood``: ``{stem}_loglik.tif`` (float32, NaN where invalid);
        * ``uncertainty``: ``{stem}_uncertainty.png``, a heat map of
          :attr:`uncertainty` (0 dark .. 1 bright, "viridis"), and the float
          map ``{stem}_uncertainty.tif``;
        * ``anomaly``: ``{stem}_anomaly.png``, a heat map of ``-log p``
          (bright = unusual; its 1st..99.5th percentiles span the colours,
          "magma"), and the float map ``{stem}_loglik.tif``;
        * ``anomaly_quantile`` or ``anomaly_threshold``: the
          :meth:`anomaly_mask` as ``{stem}_anomaly_mask.png`` (uint8, 255 =
          anomalous; for volumes and georeferenced inputs a 0/1 map in the
          input's geometry, like the labels), and an ``"anomaly"`` entry in
          the report;
        * ``regions``: connected regions (:meth:`regions`) as
          ``{stem}_regions.png`` (uint8, uint16 beyond 255 regions; the
          labels' geometry and their convention for invalid pixels), their
          overlay ``{stem}_regions_overlay.png``, and a ``"regions"`` entry
          in the report (count and pixels per region).  ``"auto"`` (the
          default): cut at ``region_scale`` for colour photos
          (:attr:`gmmseg.io.Image.is_photo`), none for other images;
          ``"scale"``: cut at ``region_scale`` for any image; a number:
          that many regions; None: no regions.

        Float maps use the input's geometry (``.nii.gz`` / GeoTIFF) where it
        has one; heat maps show the middle slice of a volume.
        Nothing is written if any target exists and ``overwrite`` is False;
        each file is written to a temporary name and renamed, and files this
        call wrote are removed again if a later one fails.  With
        ``overwrite``, files that the replaced report listed and this call
        does not write (say, regions from an earlier run) are removed once
        the new set is complete, so the folder never mixes two runs.

        Returns
        -------
        dict of str to Path
        """
        want_mask = anomaly_quantile is not None or anomaly_threshold is not None
        limit = (self.anomaly_threshold(anomaly_quantile, threshold=anomaly_threshold)
                 if want_mask else None)
        paths = self.output_paths(out_dir, stem, proba=proba, log_likelihood=log_likelihood,
                                  uncertainty=uncertainty, anomaly=anomaly,
                                  anomaly_mask=want_mask, regions=regions,
                                  region_scale=region_scale)
        request = self._region_request(regions, region_scale)
        if not overwrite:
            existing = [str(p) for p in paths.values() if p.exists()]
            if existing:
                raise OutputExistsError(
                    f"{existing[0]}: output exists (use --overwrite / overwrite=True)")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        stale = self._stale_outputs(paths, out_dir, stem) if overwrite else []
        # The report is written last and is what marks a complete set (batch
        # --resume trusts it): an old one goes first, so a save that fails
        # half-way never leaves old and new files looking complete together.
        paths["report"].unlink(missing_ok=True)
        t0 = time.perf_counter()
        written = []

        def write(kind, writer, *args, **kwargs):
            writer(paths[kind], *args, overwrite=overwrite, **kwargs)
            written.append(paths[kind])

        try:
            write("labels", write_result_map, self.labels, self.image,
                  n_components=self.n_components)
            pending = self._regions_meanwhile(*request) if request is not None else None
            write("overlay", write_png, self.overlay(alpha))
            segments = self.stats()     # (while the regions are worked out)
            region_map = None
            if pending is not None:
                region_map = pending.result()
                write("regions", write_result_map, region_map, self.image,
                      n_components=int(region_map.max()) + 1)
                write("regions_overlay", write_png, self.overlay(alpha, labels=region_map))
            if proba:
                write("proba", write_result_map, self.proba, self.image)
            if log_likelihood or anomaly:
                write("log_likelihood", write_result_map, self.log_likelihood, self.image)
            if uncertainty:
                write("uncertainty", write_png,
                      self._picture(self.uncertainty, value_range=(0.0, 1.0), cmap="viridis"))
                write("uncertainty_map", write_result_map, self.uncertainty, self.image)
            if anomaly:
                write("anomaly", write_png,
                      self._picture(-self.log_likelihood, percentiles=_ANOMALY_PERCENTILES))
            if want_mask:
                mask = self.anomaly_mask(threshold=limit)
                if paths["anomaly_mask"].name.endswith(".png"):
                    write("anomaly_mask", write_png, mask.astype(np.uint8) * np.uint8(255))
                else:
                    write("anomaly_mask", write_result_map,
                          np.where(self.valid, mask, -1).astype(np.int32), self.image,
                          n_components=2)
            self.info.setdefault("timings", {})["write"] = time.perf_counter() - t0
            report = self._report(segments, uncertainty=uncertainty,
                                  anomaly_quantile=anomaly_quantile,
                                  anomaly_threshold=anomaly_threshold)
            self.info.pop("regions", None)  # from an earlier save
            if regions is not None and regions is not False:  # batch --resume reads it
                report["regions"] = self.info["regions"] = _regions_entry(
                    regions, region_scale, region_map)
            report["outputs"] = {kind: path.name for kind, path in paths.items()}
            write("report", write_json, report)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        for path in stale:
            try:
                path.unlink(missing_ok=True)
            except OSError as err:  # the new set is complete; say so and go on
                logger.warning("could not remove %s from an earlier run: %s", path, err)
        return paths


def regions_request(regions, region_scale):
    """``save``'s region options as its report records them: ``(requested, scale)``.

    ``batch --resume`` compares this with a report to tell whether the
    regions on disk are the ones asked for.
    """
    if isinstance(regions, str):
        return regions, float(region_scale)
    return int(regions), None


def _regions_entry(regions, region_scale, region_map):
    """The report's ``"regions"``: what was asked for and, if written, what came out."""
    requested, scale = regions_request(regions, region_scale)
    entry = {"requested": requested, "scale": scale, "n_regions": None}
    if region_map is not None:
        pixels = postprocess.pixel_counts(region_map)
        entry.update(n_regions=len(pixels), min_size=postprocess.REGION_MIN_SIZE,
                     boundary_weight=postprocess.REGION_BOUNDARY_WEIGHT,
                     ridge=postprocess.REGION_RIDGE,
                     min_share=(postprocess.REGION_MIN_SHARE if isinstance(regions, str)
                                else None),
                     pixels=pixels.tolist())
    return entry


def _region_values(image, valid):
    """What regions are compared by: Lab for RGB photos, else unit-variance channels."""
    if image.is_rgb:
        return lab(image)
    values = image.data.astype(np.float32)
    for c in range(values.shape[-1]):
        channel = values[..., c]
        inside = channel[valid]
        std = float(inside.std()) if inside.size else 0.0
        channel -= np.float32(inside.mean() if inside.size else 0.0)
        if std > 0:
            channel /= np.float32(std)
    return values


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
    criterion="bic",
):
    """Segment an image with a Gaussian mixture over per-pixel features.

    Parameters
    ----------
    image : Image, ndarray or path
        ``(H, W)``, ``(H, W, C)`` or an :class:`~gmmseg.io.Image` (volumes
        ``(Z, H, W, C)`` too), or a file path.  Never modified.
    n_components : int, "auto" or sequence of int, default=4
        Number of segments K.  "auto" chooses K in 1..10 by ``criterion``
        (one mixture per K on the fit sample, as :func:`select_k` does); a
        sequence of ints chooses among those.  The choice and the criterion
        curve go into ``info["model_selection"]`` and the report.  Ignored
        when ``model`` is given.
    features : str, callable or list, default="auto"
        Feature spec (``"lab,position:0.5"``), callables
        ``f(image) -> (..., d)``, or a list of both; "auto" picks ``lab,position`` for
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
    criterion : {"bic", "aic"}, default="bic"
        How ``n_components="auto"`` chooses K.

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
    >>> seg.labels[[0, 0], [0, 19]].tolist()
    [0, 1]
    """
    k_values = None if model is not None else _candidate_ks(n_components)
    timings = {}
    t0 = time.perf_counter()
    img = as_image(image)
    timings["read"] = time.perf_counter() - t0
    where = _where(img)
    valid, n_valid = _valid_pixels(img, mask, where)

    t = time.perf_counter()
    if model is not None:
        if feature_extractor is None:
            feature_extractor = stored_feature_extractor(model)
        X = feature_extractor.transform(img, valid=valid)
    else:
        feature_extractor = FeatureExtractor(features, standardize=standardize, pca=pca)
        X = feature_extractor.fit_transform(img, valid=valid, random_state=random_state)
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    pretrained = model is not None
    fit_samples = None
    selection = None
    if model is None:
        params = dict(covariance_type=covariance_type, random_state=random_state,
                      init_params=init_params, n_init=n_init, max_iter=max_iter, tol=tol,
                      reg_covar=reg_covar, n_jobs=n_jobs)
        if k_values is not None:
            selection = _select(X, k_values, where, criterion, params, max_fit_samples)
            n_components = selection.n_components
        if selection is not None and not smoothing:
            # The chosen fit is the model; its warnings are this call's.
            selection.reemit_warnings()
            model, fit_samples = selection.model, selection.info["fit_samples"]
        elif smoothing:
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
        # hmrf_em records the start, each EM iteration and a final sweep.
        "smoothing_iterations": len(energies) - 2 if smoothing else 0,
        "model_selection": None if selection is None else selection.summary(),
        "timings": timings,
    }
    if not pretrained and not getattr(model, "metadata_", {}).get("features"):
        try:  # so that seg.model.save(...) can later be applied to other images
            model.metadata_ = {**getattr(model, "metadata_", {}),
                               "features": feature_extractor.to_dict()}
        except ValueError:
            pass  # the features include a Python callable, which cannot be saved
    logger.info("%ssegmented %d valid pixels into %d segments in %.2f s",
                where, n_valid, model.n_components, timings["total"])
    return Segmentation(labels, proba, log_lik, model, feature_extractor, img, info)


def _valid_pixels(img, mask, where):
    valid = _combined_mask(img, mask)
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        raise GmmsegError(f"{where}no valid pixels to segment (all masked, NaN or nodata)")
    return valid, n_valid


def _candidate_ks(n_components):
    """None for a fixed K, else the sorted candidate K to choose from."""
    if isinstance(n_components, str):
        if n_components != "auto":
            raise ValueError(
                f"n_components must be an integer >= 1, 'auto' or a sequence of integers, "
                f"got {n_components!r}")
        return list(range(DEFAULT_K_RANGE[0], DEFAULT_K_RANGE[1] + 1))
    if isinstance(n_components, numbers.Integral):
        return None
    try:
        values = sorted(set(n_components))
    except TypeError as err:
        raise ValueError(
            f"n_components must be an integer >= 1, 'auto' or a sequence of integers, "
            f"got {n_components!r}") from err
    if not values or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool)
                             and k >= 1 for k in values):
        raise ValueError(f"candidate n_components must be integers >= 1, got {n_components!r}")
    return values


def stored_feature_extractor(model):
    """The fitted :class:`FeatureExtractor` recorded in ``model.metadata_``.

    :func:`segment` records it on every model it fits (unless the features
    include a Python callable, which cannot be saved), and
    :meth:`GaussianMixture.save` keeps it, so a saved model can be applied to
    new images with the same features.
    """
    spec = getattr(model, "metadata_", {}).get("features")
    if spec is None:
        raise ValueError("model has no stored feature extractor; pass feature_extractor=")
    return FeatureExtractor.from_dict(spec)


def fit_sample(X, max_fit_samples, random_state):
    """The rows of ``X`` a mixture is fitted on: all, or ``max_fit_samples`` random ones.

    Parameters
    ----------
    X : (N, D) ndarray
    max_fit_samples : int or None
    random_state : int or None

    Returns
    -------
    (n, D) ndarray
        ``X`` itself when ``N <= max_fit_samples``; otherwise the rows of a
        random subset, in their original order.  The same seed gives the
        same rows, so :func:`segment` and :func:`select_k` fit on the same
        pixels.
    """
    n = len(X)
    if max_fit_samples is None or n <= max_fit_samples:
        return X
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(n, size=int(max_fit_samples), replace=False))
    return X[rows]


def _too_few_pixels(where, n_components):
    return GmmsegError(f"{where}fewer distinct valid pixels than n_components={n_components}; "
                       "use a smaller -k")


def _fit(X, n_components, where, params, max_fit_samples):
    """Fit a mixture on (a random subsample of) ``X``, components in canonical order."""
    X_fit = fit_sample(X, max_fit_samples, params["random_state"])
    model = GaussianMixture(n_components, **params)
    try:
        model.fit(X_fit)
    except TooFewDistinctRowsError as err:
        raise _too_few_pixels(where, n_components) from err
    except ValueError as err:
        raise GmmsegError(f"{where}{err}") from err
    model.sort_components()
    return model, len(X_fit)


def _select(X, k_values, where, criterion, params, max_fit_samples, covariance_types=None):
    """:func:`gmmseg.mixture.select_k` on the fit sample of ``X``; models in canonical order."""
    params = dict(params)
    ctype = params.pop("covariance_type", "full")
    X_fit = fit_sample(X, max_fit_samples, params["random_state"])
    try:
        result = select_k_arrays(X_fit, k_values, criterion=criterion,
                                 covariance_types=covariance_types or (ctype,), **params)
    except TooFewDistinctRowsError as err:
        raise _too_few_pixels(where, min(k_values)) from err
    except ValueError as err:
        raise GmmsegError(f"{where}{err}") from err
    for model in result.models.values():
        model.sort_components()
    result.info["fit_samples"] = len(X_fit)
    return result


def select_k(
    image,
    k_min=1,
    k_max=10,
    *,
    criterion="bic",
    covariance_types=("full",),
    features="auto",
    standardize=True,
    pca=None,
    mask=None,
    random_state=0,
    max_fit_samples=DEFAULT_MAX_FIT_SAMPLES,
    init_params="k-means++",
    n_init=1,
    max_iter=100,
    tol=1e-3,
    reg_covar=1e-6,
    n_jobs=None,
):
    """How many segments: fit a mixture for each K in ``k_min..k_max``, pick by BIC or AIC.

    Features are built once and the mixtures are fitted on one random
    subsample of the valid pixels -- the very features and subsample
    :func:`segment` uses with the same arguments, so ``segment(image,
    n_components="auto")`` makes the same choice.  BIC and AIC are computed
    on that fit sample (``n`` = its size), lower is better.  Work is shared
    between K; see :func:`gmmseg.mixture.select_k`.

    Parameters
    ----------
    image : Image, ndarray or path
        As for :func:`segment`.
    k_min, k_max : int, default 1 and 10
        The K tried: ``k_min..k_max`` inclusive.
    criterion : {"bic", "aic"}, default="bic"
    covariance_types : str or sequence of str, default=("full",)
        Also choose among these covariance types (each is fitted for every K).
    features, standardize, pca, mask, random_state, max_fit_samples :
        As for :func:`segment`.
    init_params, n_init, max_iter, tol, reg_covar, n_jobs :
        Passed to :class:`~gmmseg.mixture.GaussianMixture`.

    Returns
    -------
    SelectKResult
        ``rows`` (one per K: log-likelihood, BIC, AIC, iterations, seconds),
        the chosen ``n_components`` and ``covariance_type``, the fitted
        ``model`` (components in canonical order), ``features`` (the fitted
        :class:`~gmmseg.features.FeatureExtractor`) and ``info`` (``n_valid``,
        ``fit_samples``, ``timings``).

    Raises
    ------
    GmmsegError
        No valid pixel, or not even ``k_min`` distinct valid pixels.  A K
        larger than the number of distinct pixels is recorded as an error
        in its row and not chosen.

    Examples
    --------
    >>> img = np.zeros((30, 30), np.float32); img[10:] = 1; img[20:] = 2
    >>> img += np.random.default_rng(0).normal(0, 0.05, img.shape).astype(np.float32)
    >>> select_k(img, 1, 5).n_components
    3
    """
    for name, value in (("k_min", k_min), ("k_max", k_max)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if k_max < k_min:
        raise ValueError(f"k_max must be >= k_min, got k_min={k_min}, k_max={k_max}")
    timings = {}
    t0 = time.perf_counter()
    img = as_image(image)
    timings["read"] = time.perf_counter() - t0
    where = _where(img)
    valid, n_valid = _valid_pixels(img, mask, where)
    t = time.perf_counter()
    extractor = FeatureExtractor(features, standardize=standardize, pca=pca)
    X = extractor.fit_transform(img, valid=valid, random_state=random_state)
    timings["features"] = time.perf_counter() - t
    t = time.perf_counter()
    params = dict(random_state=random_state, init_params=init_params, n_init=n_init,
                  max_iter=max_iter, tol=tol, reg_covar=reg_covar, n_jobs=n_jobs)
    result = _select(X, range(int(k_min), int(k_max) + 1), where, criterion, params,
                     max_fit_samples, covariance_types=covariance_types)
    timings["select"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    result.features = extractor
    result.info.update(n_valid=n_valid, timings=timings)
    logger.info("%schose K=%d (%s) by %s among K=%d..%d in %.2f s", where,
                result.n_components, result.covariance_type, criterion.upper(), k_min, k_max,
                timings["total"])
    return result


def plot_selection(result, path=None, *, overwrite=False):
    """BIC and AIC against K, the chosen K marked; saved to ``path`` if given.

    Needs matplotlib (the ``plot`` extra), imported only here; the figure
    is drawn on an Agg canvas, so no display and no global backend change
    is involved.

    Parameters
    ----------
    result : SelectKResult
    path : str or Path, optional
        Image file to write; its suffix chooses the format (``.png``,
        ``.pdf``, ``.svg``, ...).  Written atomically; an existing file is
        kept unless ``overwrite``.
    overwrite : bool, default=False

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(f"plotting needs matplotlib; {_PLOT_HINT}") from err
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    ctypes = list(dict.fromkeys(r["covariance_type"] for r in result.rows))
    chosen = result.best_row
    for ax, name in zip(axes, ("bic", "aic")):
        for i, ctype in enumerate(ctypes):
            curve = result.curve(ctype)
            points = [(k, v) for k, v in zip(curve["k_values"], curve[name]) if v is not None]
            ax.plot(*zip(*points), marker="o", markersize=4, color=f"C{i}",
                    label=ctype if len(ctypes) > 1 else None)
        ax.axvline(chosen["n_components"], color="crimson", linewidth=0.8, linestyle=":")
        if name == result.criterion:
            ax.plot([chosen["n_components"]], [chosen[name]], marker="*", markersize=15,
                    color="crimson", linestyle="none",
                    label=f"chosen: K = {chosen['n_components']}"
                          + (f" ({chosen['covariance_type']})" if len(ctypes) > 1 else ""))
            ax.legend()
        ax.set_ylabel(name.upper())
        ax.margins(x=0.06, y=0.1)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("K (number of components)")
    axes[-1].set_xticks(sorted({r["n_components"] for r in result.rows}))
    fig.suptitle(f"Model selection by {result.criterion.upper()}: K = {result.n_components} "
                 f"(criteria on {result.n_samples:,.0f} fit samples; lower is better)",
                 fontsize="medium")
    if path is not None:
        path = Path(path)
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in canvas.get_supported_filetypes():
            raise ValueError(f"{path}: unsupported plot format {path.suffix!r}; use one of "
                             f"{', '.join(sorted(canvas.get_supported_filetypes()))}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120)
    return fig
