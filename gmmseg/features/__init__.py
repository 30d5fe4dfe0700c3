"""Per-pixel feature matrices for mixture segmentation.

A feature *builder* turns an :class:`~gmmseg.io.Image` into a stack of shape
``image.spatial_shape + (d,)`` (float32), computed over every pixel, valid or
not. :class:`FeatureExtractor` combines builders and user callables, keeps the
rows of the valid pixels, standardises the columns, applies column weights and
an optional PCA, and remembers those statistics so that a model fitted on one
image can be applied to another.

Builders (``FEATURE_BUILDERS``):

========== ===== ==========================================================
name       d     columns
========== ===== ==========================================================
lab        3 / 1 CIE L*a*b* of an RGB image; L* only for a grey image
rgb        3     R, G, B scaled to [0, 1]
hsv        4     cos(hue), sin(hue), saturation, value
gray       1     luminance (RGB), the channel (grey), mean of the bands
bands      C     raw channels, optionally a selection ``bands=(i, j, ...)``
position   2 / 3 x, y (2-D) or z, y, x (volumes), in physical units, longest
                 side spanning [0, 1]
texture    3 S   local mean, local standard deviation and gradient magnitude
                 of the luminance at each scale in ``sigmas``
contrast   1     luminance minus its local mean at scale ``sigma``
                 (background subtraction for uneven illumination)
========== ===== ==========================================================

Layout (each module owns one concern; imports point down this list only):

- :mod:`.extractor`: :class:`FeatureExtractor`, the fitted statistics and
  their dict round trip;
- :mod:`._stats`: chunked column statistics, PCA fit, affine map of rows;
- :mod:`.spec`: feature names, their one check, ``"auto"``, the spec grammar;
- :mod:`.builders`: per-pixel builders, the registry and column names;
- :mod:`.neighbourhood`: ``texture`` and ``contrast`` (local statistics);
- :mod:`._pixels`: dtype policy and stripe-by-stripe per-pixel evaluation.

This package computes features only; it never fits a mixture.
"""

from .builders import FEATURE_BUILDERS, bands, gray, hsv, lab, position, rgb
from .extractor import FeatureExtractor
from .neighbourhood import contrast, texture
from .spec import FeatureItem, default_feature_names, parse_feature_spec

__all__ = [
    "FEATURE_BUILDERS",
    "FeatureExtractor",
    "FeatureItem",
    "bands",
    "contrast",
    "default_feature_names",
    "gray",
    "hsv",
    "lab",
    "parse_feature_spec",
    "position",
    "rgb",
    "texture",
]
