"""The result of :func:`~gmmseg.pipeline.segment`: maps, model, and views of them.

:class:`Segmentation` holds the label, probability and log-likelihood maps
with the model and image they came from, and derives what a user looks at
from them (overlays, connected regions, uncertainty, anomalies, per-segment
statistics).  Writing files is :mod:`gmmseg.pipeline.outputs`' job.
"""

from __future__ import annotations

import functools
import math
import numbers
import threading
from dataclasses import dataclass, field

import numpy as np

from .. import postprocess
from ..features import FeatureExtractor, lab
from ..io import Image, pixel_size
from ..mixture import GaussianMixture
from . import figures, outputs

# One lock for every map worked out on demand: two threads that ask for
# the same map at once compute it once.
_ON_DEMAND_LOCK = threading.RLock()


class _OnDemand:
    """A map of a :class:`Segmentation` stored as given or, given as None,
    worked out on first access (:meth:`Segmentation.compute_maps`) and kept.

    A dataclass field with no default: reading it on the class raises
    AttributeError, which tells :func:`dataclasses.dataclass` so.
    """

    def __set_name__(self, owner, name):
        self.name, self.slot = name, f"_{name}_map"

    def __get__(self, seg, owner=None):
        if seg is None:
            raise AttributeError(self.name)
        value = seg.__dict__.get(self.slot)
        if value is None:
            seg.compute_maps(**{name: name == self.name for name in ("proba", "log_likelihood")})
            value = seg.__dict__.get(self.slot)
        return value

    def __set__(self, seg, value):
        seg.__dict__[self.slot] = value


@dataclass(eq=False, repr=False)
class Segmentation:
    """The result of :func:`segment`.

    :func:`segment` works out the labels and the mean log-likelihood only;
    ``proba`` and ``log_likelihood`` (given as None) are worked out on first
    access, or by :meth:`save` when an output needs them, and then kept:
    from :attr:`model`, :attr:`features` and :attr:`image` as they are at
    that time (the features are built again from the image, so a feature
    callable is called again; do not change the image's array in place
    before then).  Until then a segmentation holds the labels (4 bytes a
    pixel) and, for colour photos, the CIE Lab map of the features for
    :meth:`regions` (12 bytes a pixel, released once the regions are
    worked out).  ``proba`` then takes ``4 K`` bytes a pixel,
    ``log_likelihood`` and :attr:`uncertainty` 4 each, and working them
    out briefly needs the features again (``4 D`` bytes a pixel).  With
    ``smoothing`` they come from the prior's inference and are stored at
    once.

    Attributes
    ----------
    labels : (H, W) or (Z, H, W) int32 ndarray
        Segment of every pixel in canonical component order, -1 where the
        pixel is invalid (alpha, NaN, nodata, outside ``mask``).
    proba : (..., K) float32 ndarray
        Responsibilities; 0 at invalid pixels.  ``argmax(proba) == labels``
        except where ``min_region_size`` merged a small region into its
        neighbour: the probabilities stay the model's, the label is the
        cleaned-up one.  Worked out on first access when given as None.
    log_likelihood : (...) float32 ndarray
        Per-pixel log density under the mixture (low = unusual); NaN at
        invalid pixels.  Worked out on first access when given as None.
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
    proba: np.ndarray = _OnDemand()
    log_likelihood: np.ndarray = _OnDemand()
    model: GaussianMixture
    features: FeatureExtractor
    image: Image
    info: dict = field(default_factory=dict)
    _hierarchies: dict = field(default_factory=dict, init=False, repr=False)
    # What the regions compare (see _region_values), when the features
    # already computed it: the Lab map of a colour photo.
    _region_map: np.ndarray = field(default=None, init=False, repr=False)

    def __repr__(self):
        waiting = [name for name in ("proba", "log_likelihood")
                   if self.__dict__.get(f"_{name}_map") is None]
        return (f"{type(self).__name__}(shape={self.labels.shape}, "
                f"n_components={self.n_components}, features={self.features.spec_string!r}"
                + (f", on demand: {', '.join(waiting)}" if waiting else "") + ")")

    @property
    def n_components(self):
        return self.model.n_components

    def compute_maps(self, *, proba=True, log_likelihood=True):
        """Work out the maps asked for that are not stored yet, in one pass; returns self.

        :attr:`proba` and :attr:`log_likelihood` come from one E-step over
        the features of :attr:`image`, built again with :attr:`features`
        (the values are those :func:`segment` would have stored at once).
        Reading either attribute calls this for that one map; call it to get
        both with one pass.  Needs ``4 D`` bytes a pixel for the features
        while it runs, besides the maps themselves.
        """
        with _ON_DEMAND_LOCK:
            wanted = {name: ask for name, ask in (("proba", proba),
                                                  ("log_likelihood", log_likelihood))
                      if ask and self.__dict__.get(f"_{name}_map") is None}
            if not wanted:
                return self
            valid = self.valid
            X = self.features.transform(self.image, valid=valid)
            result = self.model.e_step(X, labels=False, proba="proba" in wanted,
                                       log_likelihood="log_likelihood" in wanted)
            del X
            if "proba" in wanted:
                self.proba = postprocess.scatter_valid(
                    result.proba.astype(np.float32, copy=False), valid, 0.0)
            if "log_likelihood" in wanted:
                self.log_likelihood = postprocess.scatter_valid(
                    result.log_likelihood.astype(np.float32, copy=False), valid, np.nan)
        return self

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
        labels = self._labels_like(labels)
        return figures.overlay_picture(self.image, labels, alpha=alpha, boundaries=boundaries,
                                       bands=bands, slice_index=z)

    def montage(self, alpha=0.5, *, boundaries=True, bands=None, labels=None, legend=True,
                n_slices=postprocess.N_SLICES, planes="auto", tile_size=postprocess.TILE_SIZE):
        """A volume's segments as a montage of slices, ``(H, W, 3)`` uint8 (what ``save`` writes).

        Evenly spaced slices in three planes (``planes="auto"``: only the
        acquired plane for stacks under 8 slices), each drawn at physical
        size -- one scale in pixels per millimetre in every tile and both
        directions -- with ``tile_size`` pixels for the largest plane.  NIfTI
        and DICOM volumes are turned as radiologists view them (axial
        slices with anterior up and the patient's right on the left), with
        orientation letters at the tiles' edges and the file's voxel index
        in each caption.  ``legend`` adds each segment's colour, name, share
        and volume.  2-D images give :meth:`overlay`.
        """
        labels = self._labels_like(labels)
        if self.labels.ndim == 2:
            return self.overlay(alpha, boundaries=boundaries, bands=bands, labels=labels)
        names = figures.segment_names(self) if legend and labels is self.labels else None
        return figures.overlay_picture(self.image, labels, alpha=alpha, boundaries=boundaries,
                                       bands=bands, names=names, n_slices=n_slices,
                                       planes=planes, tile_size=tile_size)

    def _labels_like(self, labels):
        if labels is None:
            return self.labels
        labels = np.asarray(labels)
        if labels.shape != self.labels.shape:
            raise ValueError(f"labels must have shape {self.labels.shape}, got {labels.shape}")
        return labels

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
            values, self._region_map = self._region_map, None
            if values is None:
                values = _region_values(self.image, self.valid)
            self._hierarchies[key] = postprocess.region_hierarchy(
                self.labels, values, min_size=min_size,
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

    def stats(self):
        """Per-segment pixel count, share, mean/std in the input's units, and physical size.

        See :func:`gmmseg.postprocess.segment_stats`.  Where the input's
        pixel size is known (:func:`gmmseg.io.pixel_size`), each entry also
        has ``"area"`` (2-D) or ``"volume"`` (3-D) in ``"units"``: the CRS's
        units squared for rasters (``"m^2"``, ``"degree^2"``, ...) with
        ``"hectares"`` for projected CRSs, ``"mm^3"`` with
        ``"millilitres"`` for NIfTI and DICOM volumes, ``"mm^2"`` for single
        slices.
        """
        # Invalid pixels are -1 in the labels, which segment_stats leaves out.
        stats = postprocess.segment_stats(self.labels, self.image.data, self.n_components)
        size = pixel_size(self.image)
        if size is not None:
            for entry in stats:
                n = entry["pixels"]
                entry[size["measure"]] = n * size["per_pixel"]
                entry["units"] = size["units"]
                for key in ("hectares", "millilitres"):
                    if f"{key}_per_pixel" in size:
                        entry[key] = n * size[f"{key}_per_pixel"]
        return stats

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
        >>> from gmmseg import segment
        >>> img = np.zeros((20, 20), np.float32); img[10:] = 1; img[3, 3] = 0.5
        >>> seg = segment(img, 2)
        >>> np.argwhere(seg.anomaly_mask(0.005)).tolist()
        [[3, 3]]
        """
        limit = self.anomaly_threshold(quantile, threshold=threshold)
        with np.errstate(invalid="ignore"):
            return (self.log_likelihood < limit) & self.valid

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
        return outputs.segmentation_report(self, self.stats(), uncertainty=uncertainty,
                                           anomaly_quantile=anomaly_quantile,
                                           anomaly_threshold=anomaly_threshold)

    def output_paths(self, out_dir, stem=None, *, proba=False, log_likelihood=False,
                     uncertainty=False, anomaly=False, anomaly_mask=False, regions="auto",
                     region_scale=postprocess.REGION_SCALE):
        """The files :meth:`save` writes with these options, by kind.

        ``labels``, ``overlay``, ``report`` always; ``proba``,
        ``log_likelihood`` (also with ``anomaly``), ``uncertainty`` (heat map)
        and ``uncertainty_map`` (float), ``anomaly`` (heat map),
        ``anomaly_mask`` and ``regions`` (with ``regions_overlay``) on
        request; names are made by :func:`gmmseg.pipeline.outputs.output_paths`.
        """
        request = outputs.region_request(self.image, regions, region_scale)
        return outputs.output_paths(
            self.image, out_dir, stem or self.image.name, proba=proba,
            log_likelihood=log_likelihood, uncertainty=uncertainty, anomaly=anomaly,
            anomaly_mask=anomaly_mask, regions=request is not None)

    def save(self, out_dir, stem=None, *, overwrite=False, proba=False,
             log_likelihood=False, alpha=0.5, uncertainty=False, anomaly=False,
             anomaly_quantile=None, anomaly_threshold=None, regions="auto",
             region_scale=postprocess.REGION_SCALE):
        """Write label map, overlay and report (and optional maps).

        Files are ``{stem}_labels.png`` (uint8, uint16 if K > 255; formats
        with geometry keep it, see :func:`gmmseg.io.result_suffix`),
        ``{stem}_overlay.png`` (for a volume, :meth:`montage`: slices in
        three planes at physical size, with a legend), ``{stem}_report.json``,
        for NIfTI and DICOM inputs ``{stem}_labels.txt`` (ITK-SNAP label
        descriptions) and ``{stem}_labels.lut`` (FSLeyes lookup table), for
        rasters ``{stem}_labels.tif.aux.xml`` (GDAL category names and
        raster attribute table, which QGIS shows; the GeoTIFF itself gets
        the overlay's colours as its colour table), and on request:

        * ``proba``: ``{stem}_proba.tif`` (float32, ``(..., K)``);
        * ``log_likelihood``: ``{stem}_loglik.tif`` (float32, NaN where invalid);
        * ``uncertainty``: ``{stem}_uncertainty.png``, a heat map of
          :attr:`uncertainty` (0 dark .. 1 bright, "viridis") with a colour
          bar, and the float map ``{stem}_uncertainty.tif``;
        * ``anomaly``: ``{stem}_anomaly.png``, a heat map of ``-log p``
          in nats (bright = unusual; its 1st..99.5th percentiles span the
          colours, "magma") with a colour bar, and the float map
          ``{stem}_loglik.tif``;
        * ``anomaly_quantile`` or ``anomaly_threshold``: the
          :meth:`anomaly_mask` as ``{stem}_anomaly_mask.png`` (uint8, 255 =
          anomalous; for volumes and georeferenced inputs a 0/1 map in the
          input's geometry, like the labels), and an ``"anomaly"`` entry in
          the report;
        * ``regions``: connected regions (:meth:`regions`) as
          ``{stem}_regions.png`` (uint8, uint16 beyond 255 regions; the
          labels' geometry, side files and convention for invalid pixels),
          their overlay ``{stem}_regions_overlay.png``, and a ``"regions"`` entry
          in the report (count and pixels per region).  ``"auto"`` (the
          default): cut at ``region_scale`` for colour photos
          (:attr:`gmmseg.io.Image.is_photo`), none for other images;
          ``"scale"``: cut at ``region_scale`` for any image; a number:
          that many regions; None: no regions.

        Float maps use the input's geometry (``.nii.gz`` / GeoTIFF) where it
        has one; heat maps of a volume are montages like its overlay.  The
        report's ``"heat_maps"`` entry gives each heat map's value range.
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
        return outputs.write_outputs(
            self, out_dir, stem or self.image.name, overwrite=overwrite, proba=proba,
            log_likelihood=log_likelihood, alpha=alpha, uncertainty=uncertainty,
            anomaly=anomaly, anomaly_quantile=anomaly_quantile,
            anomaly_threshold=anomaly_threshold, regions=regions, region_scale=region_scale)


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
