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

This module computes features only; it never fits a mixture.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from .io import Image, as_image

logger = logging.getLogger(__name__)

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

# Pixels converted per stripe by the per-pixel builders: bounds the float32
# temporaries to a few MiB whatever the image size.
_STRIPE_PIXELS = 1 << 18
# Elements (rows x columns) per chunk when copying rows or accumulating
# float64 statistics.
_CHUNK_ELEMENTS = 1 << 22
# Rows per chunk for streaming passes over a feature matrix.
_SMALL_CHUNK_ROWS = 1 << 16
# Floor of the Gaussian-weighted valid fraction in masked texture, so pixels
# far from any valid pixel get 0 instead of 0 / 0.
_MIN_WEIGHT = np.float32(1e-6)
_DICT_FORMAT = "gmmseg-features"
_DICT_VERSION = 1

ImageLike = Image | np.ndarray


# ---------------------------------------------------------------------------
# dtype policy and small helpers
# ---------------------------------------------------------------------------


def _to_image(image: ImageLike) -> Image:
    return image if isinstance(image, Image) else as_image(image)


def _unit_scale(dtype: np.dtype) -> float:
    """Divisor that maps a dtype's full range to [0, 1] (1 for floats)."""
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def _unit_float(stripe: np.ndarray, scale: float, *, clip: bool) -> np.ndarray:
    """Fresh float32 copy of ``stripe`` divided by ``scale``, optionally clipped to [0, 1]."""
    if scale != 1.0:
        out = np.divide(stripe, np.float32(scale), dtype=np.float32)
    else:
        out = stripe.astype(np.float32)
    # Unsigned integers divided by their maximum are already in [0, 1].
    if clip and stripe.dtype.kind != "u":
        np.clip(out, 0.0, 1.0, out=out)
    return out


# A per-pixel feature as ``(n_out, convert)``: ``convert(stripe, row0)`` maps
# a ``(rows, W, C)`` stripe of the data, starting at row ``row0`` of the image
# seen as ``(prod(spatial[:-1]), W)``, to ``(rows, W, n_out)`` float32.
_PixelMap = tuple[int, Callable[[np.ndarray, int], np.ndarray]]


def _map_rows(
    data: np.ndarray, pixel_map: _PixelMap, mask: np.ndarray | None, out: np.ndarray
) -> None:
    """Write a per-pixel feature of the selected pixels into ``out``, stripe by stripe.

    Parameters
    ----------
    data : (..., W, C) ndarray
        Image data, 2-D or volume, channel-last.
    pixel_map : _PixelMap
    mask : flat bool ndarray of ``data.shape[:-1]`` size, or None for all pixels
    out : (n_selected, n_out) float32 ndarray
        Destination, may be a column slice of a larger matrix.
    """
    n_out, convert = pixel_map
    width = data.shape[-2]
    if out.shape[0] == 0 or width == 0:
        return
    # Volumes are treated as a tall 2-D image (Z*H, W); stripes bound the
    # float32 temporaries whatever the image size.
    rows = data.reshape(-1, width, data.shape[-1])
    step = max(1, _STRIPE_PIXELS // width)
    pos = 0
    for r0 in range(0, rows.shape[0], step):
        values = convert(rows[r0 : r0 + step], r0).reshape(-1, n_out)
        if mask is not None:
            values = values[mask[r0 * width : (r0 + step) * width]]
        out[pos : pos + values.shape[0]] = values
        pos += values.shape[0]


def _map_pixels(data: np.ndarray, pixel_map: _PixelMap) -> np.ndarray:
    """A per-pixel feature of every pixel, shape ``data.shape[:-1] + (n_out,)``, float32."""
    out = np.empty(data.shape[:-1] + (pixel_map[0],), np.float32)
    _map_rows(data, pixel_map, None, out.reshape(-1, pixel_map[0]))
    return out


def _spacing(image: Image) -> tuple[float, ...]:
    ndim = len(image.spatial_shape)
    if image.spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in image.spacing)
    if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"image.spacing must hold {ndim} positive finite numbers, got {image.spacing!r}"
        )
    return spacing


def _require_rgb(image: Image, feature: str) -> None:
    if not image.is_rgb:
        raise ValueError(
            f"feature {feature!r} needs an RGB image (3 channels R, G, B); got "
            f"{image.n_channels} channel(s) {tuple(image.channels)!r} of dtype "
            f"{image.data.dtype}; use 'bands' or 'gray' for other data"
        )


def _gray_map(image: Image) -> _PixelMap:
    data = image.data
    if image.is_rgb:
        scale = _unit_scale(data.dtype)
        return 1, lambda s, r0: cv2.cvtColor(
            _unit_float(s, scale, clip=False), cv2.COLOR_RGB2GRAY
        )
    if image.n_channels == 1:
        return 1, lambda s, r0: s.astype(np.float32)
    return 1, lambda s, r0: s.mean(axis=-1, dtype=np.float32)


def _luminance(image: Image) -> np.ndarray:
    """Luminance of an RGB image in [0, 1], the channel of a grey image, else the band mean.

    Returns
    -------
    spatial_shape float32 ndarray
        A new array (never a view of ``image.data``).
    """
    return _map_pixels(image.data, _gray_map(image))[..., 0]


# ---------------------------------------------------------------------------
# feature builders
# ---------------------------------------------------------------------------


def lab(image: ImageLike) -> np.ndarray:
    """CIE L*a*b* colour (D65, sRGB input) computed with OpenCV's float32 path.

    Integer data is scaled to [0, 1] by the dtype's maximum (255 for 8-bit,
    65535 for 16-bit); float data is taken to be in [0, 1] and clipped to it.
    The result agrees with :func:`skimage.color.rgb2lab` to within 0.5 units.

    Parameters
    ----------
    image : Image or ndarray
        An RGB image (``image.is_rgb``) or a single-channel grey image, 2-D or
        volume.

    Returns
    -------
    ndarray of shape ``image.spatial_shape + (3,)``, float32
        L* in [0, 100], a* and b* roughly in [-128, 127]. For a grey image the
        shape ends in ``(1,)`` and holds L* only (a* = b* = 0 for grey).

    Raises
    ------
    ValueError
        If the image has several channels but is not RGB.

    Examples
    --------
    >>> import numpy as np
    >>> from gmmseg.io import Image
    >>> img = Image(np.full((2, 2, 3), 255, np.uint8), np.ones((2, 2), bool),
    ...             channels=("R", "G", "B"))
    >>> lab(img)[0, 0].round(1)
    array([100.,   0.,   0.], dtype=float32)
    """
    image = _to_image(image)
    return _map_pixels(image.data, _lab_map(image))


def _lab_map(image: Image) -> _PixelMap:
    scale = _unit_scale(image.data.dtype)
    if image.n_channels == 1:

        def convert(stripe: np.ndarray, row0: int) -> np.ndarray:
            grey = _unit_float(stripe, scale, clip=True)
            # L* of a grey pixel is L* of the colour (g, g, g).
            return cv2.cvtColor(np.repeat(grey, 3, axis=-1), cv2.COLOR_RGB2Lab)[..., :1]

        return 1, convert
    _require_rgb(image, "lab")
    return 3, lambda s, r0: cv2.cvtColor(_unit_float(s, scale, clip=True), cv2.COLOR_RGB2Lab)


def rgb(image: ImageLike) -> np.ndarray:
    """R, G, B values, integers scaled to [0, 1] by the dtype's maximum.

    Parameters
    ----------
    image : Image or ndarray
        An RGB image (``image.is_rgb``), 2-D or volume. Float data is used as is.

    Returns
    -------
    ndarray of shape ``image.spatial_shape + (3,)``, float32

    Raises
    ------
    ValueError
        If the image is not RGB.
    """
    image = _to_image(image)
    return _map_pixels(image.data, _rgb_map(image))


def _rgb_map(image: Image) -> _PixelMap:
    _require_rgb(image, "rgb")
    scale = _unit_scale(image.data.dtype)
    return 3, lambda s, r0: _unit_float(s, scale, clip=False)


def hsv(image: ImageLike) -> np.ndarray:
    """Hue, saturation and value, with the hue encoded as a (cos, sin) pair.

    The hue angle h is circular: red sits at both 0 and 360 degrees. Encoding
    it as ``(cos h, sin h)`` puts reds from both ends of the range next to each
    other, so a Gaussian component is not split across the wrap-around. Grey
    pixels (saturation 0) have hue 0, i.e. ``(1, 0)``.

    Parameters
    ----------
    image : Image or ndarray
        An RGB image (``image.is_rgb``), 2-D or volume; integers are scaled to
        [0, 1] by the dtype's maximum, floats clipped to [0, 1].

    Returns
    -------
    ndarray of shape ``image.spatial_shape + (4,)``, float32
        Columns ``cos h, sin h, s, v``; s and v in [0, 1].

    Raises
    ------
    ValueError
        If the image is not RGB.
    """
    image = _to_image(image)
    return _map_pixels(image.data, _hsv_map(image))


def _hsv_map(image: Image) -> _PixelMap:
    _require_rgb(image, "hsv")
    scale = _unit_scale(image.data.dtype)

    def convert(stripe: np.ndarray, row0: int) -> np.ndarray:
        hsv_ = cv2.cvtColor(_unit_float(stripe, scale, clip=True), cv2.COLOR_RGB2HSV)
        out = np.empty(stripe.shape[:-1] + (4,), np.float32)
        hue = np.deg2rad(hsv_[..., 0])
        np.cos(hue, out=out[..., 0])
        np.sin(hue, out=out[..., 1])
        out[..., 2:] = hsv_[..., 1:]
        return out

    return 4, convert


def gray(image: ImageLike) -> np.ndarray:
    """Grey level: luminance for RGB, the channel for grey, the band mean otherwise.

    RGB luminance is ``0.299 R + 0.587 G + 0.114 B`` (Rec. 601) of the colour
    scaled to [0, 1]; single-channel data is returned unscaled (e.g. CT
    Hounsfield units stay as they are).

    Parameters
    ----------
    image : Image or ndarray
        Any image, 2-D or volume.

    Returns
    -------
    ndarray of shape ``image.spatial_shape + (1,)``, float32
    """
    image = _to_image(image)
    return _map_pixels(image.data, _gray_map(image))


def _band_indices(selection: Any, n_channels: int) -> list[int] | None:
    if selection is None:
        return None
    if isinstance(selection, (int, np.integer)) and not isinstance(selection, bool):
        selection = (selection,)
    try:
        indices = list(selection)
    except TypeError as err:
        raise TypeError(
            f"bands must be a sequence of 0-based channel indices, got {selection!r}"
        ) from err
    if not indices:
        raise ValueError("bands must select at least one channel, got an empty selection")
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"bands must hold integer channel indices, got {selection!r}")
        if not 0 <= i < n_channels:
            raise ValueError(
                f"bands index {i} is out of range for an image with {n_channels} "
                f"channel(s) (0-based indices 0..{n_channels - 1})"
            )
    if len(set(indices)) != len(indices):
        raise ValueError(f"bands selects a channel twice: {selection!r}")
    return [int(i) for i in indices]


def bands(image: ImageLike, *, bands: Sequence[int] | None = None) -> np.ndarray:
    """Raw channel values as float32, all channels or a selection.

    Parameters
    ----------
    image : Image or ndarray
        Any image, 2-D or volume, any number of channels.
    bands : sequence of int, optional
        0-based channel indices to keep, in the order given. Default: all.

    Returns
    -------
    ndarray of shape ``image.spatial_shape + (len(bands),)``, float32
        A new array, values unscaled.

    Raises
    ------
    ValueError
        If an index is out of range, repeated, or the selection is empty.
    """
    image = _to_image(image)
    return _map_pixels(image.data, _bands_map(image, bands=bands))


def _bands_map(image: Image, *, bands: Sequence[int] | None = None) -> _PixelMap:
    indices = _band_indices(bands, image.n_channels)
    if indices is None:
        return image.n_channels, lambda s, r0: s.astype(np.float32)
    # Fancy indexing already copies, so astype need not copy again.
    return len(indices), lambda s, r0: s[..., indices].astype(np.float32, copy=False)


def position(image: ImageLike) -> np.ndarray:
    """Normalised pixel coordinates in physical units.

    Coordinates are ``index * spacing`` along each spatial axis, divided by the
    longest physical extent ``max((n - 1) * spacing)``, so the longest side
    spans [0, 1] and the others keep their true proportion.

    Parameters
    ----------
    image : Image or ndarray
        Any image; ``image.spacing`` (None means 1 per axis) gives the pixel size.

    Returns
    -------
    ndarray of shape ``image.spatial_shape + (ndim,)``, float32
        Columns ``x, y`` for 2-D images (x along columns, y along rows) and
        ``z, y, x`` for volumes.

    Examples
    --------
    >>> import numpy as np
    >>> from gmmseg.io import Image
    >>> p = position(Image(np.zeros((2, 3, 1)), np.ones((2, 3), bool)))
    >>> p[..., 0]
    array([[0. , 0.5, 1. ],
           [0. , 0.5, 1. ]], dtype=float32)
    """
    image = _to_image(image)
    return _map_pixels(image.data, _position_map(image))


def _position_map(image: Image) -> _PixelMap:
    shape = tuple(image.spatial_shape)
    spacing = _spacing(image)
    longest = max((n - 1) * s for n, s in zip(shape, spacing))
    if longest <= 0:
        longest = 1.0
    # Scaled coordinate of every index along each spatial axis.
    coords = [(np.arange(n) * (s / longest)).astype(np.float32) for n, s in zip(shape, spacing)]

    def convert(stripe: np.ndarray, row0: int) -> np.ndarray:
        n_rows, width = stripe.shape[:2]
        out = np.empty((n_rows, width, len(shape)), np.float32)
        row = np.arange(row0, row0 + n_rows)
        if len(shape) == 2:
            out[..., 0] = coords[1]
            out[..., 1] = coords[0][row, np.newaxis]
        else:
            out[..., 0] = coords[0][row // shape[1], np.newaxis]
            out[..., 1] = coords[1][row % shape[1], np.newaxis]
            out[..., 2] = coords[2]
        return out

    return len(shape), convert


def _check_sigmas(sigmas: Any) -> tuple[float, ...]:
    if isinstance(sigmas, (int, float, np.number)) and not isinstance(sigmas, bool):
        sigmas = (sigmas,)
    try:
        values = tuple(float(s) for s in sigmas)
    except (TypeError, ValueError) as err:
        raise TypeError(f"sigmas must be a sequence of numbers, got {sigmas!r}") from err
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"sigmas must be one or more positive finite numbers, got {sigmas!r}")
    return values


def _check_sigma(sigma: Any) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.number)):
        raise TypeError(f"sigma must be a number, got {sigma!r}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    return float(sigma)


class _Smoother:
    """Gaussian blur and gradient magnitude of float32 arrays, 2-D (OpenCV) or 3-D (SciPy).

    ``sigma`` and gradients are in units of the finest pixel spacing, so an
    anisotropic volume is smoothed over the same physical distance on every axis.
    """

    def __init__(self, spacing: tuple[float, ...]):
        finest = min(spacing)
        self.relative = tuple(s / finest for s in spacing)
        self.is_2d = len(spacing) == 2

    def blur(self, a: np.ndarray, sigma: float) -> np.ndarray:
        per_axis = [sigma / r for r in self.relative]
        if self.is_2d:
            return cv2.GaussianBlur(
                a, (0, 0), sigmaX=per_axis[1], sigmaY=per_axis[0],
                borderType=cv2.BORDER_REFLECT,
            )
        return ndimage.gaussian_filter(a, per_axis, mode="reflect", truncate=4.0)

    def gradient_magnitude(self, a: np.ndarray) -> np.ndarray:
        # Central differences of the already smoothed image.
        if self.is_2d:
            gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=1, scale=0.5 / self.relative[1],
                           borderType=cv2.BORDER_REFLECT)
            gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=1, scale=0.5 / self.relative[0],
                           borderType=cv2.BORDER_REFLECT)
            # NumPy rather than cv2.magnitude, whose result can vary in the
            # last bit from call to call; features must be reproducible.
            gx *= gx
            gy *= gy
            gx += gy
            return np.sqrt(gx, out=gx)
        total = np.zeros_like(a)
        for axis, rel in enumerate(self.relative):
            d = ndimage.correlate1d(a, [-0.5 / rel, 0.0, 0.5 / rel], axis=axis, mode="reflect")
            d *= d
            total += d
        return np.sqrt(total, out=total)


def texture(image: ImageLike, *, sigmas: Sequence[float] = (1.0, 2.0, 4.0)) -> np.ndarray:
    """Local mean, local standard deviation and gradient magnitude at several scales.

    Computed on the luminance (see :func:`gray`): luminance in [0, 1] for RGB,
    the raw channel for grey, the band mean otherwise. At each scale sigma the
    local mean and variance are Gaussian-weighted; the gradient magnitude is
    that of the Gaussian-smoothed image, per finest pixel. Invalid pixels
    (``image.valid`` False, e.g. nodata or NaN) are left out of every local
    average (normalised convolution), so they do not bleed into their
    neighbours. 2-D images use OpenCV, volumes SciPy; anisotropic spacing is
    honoured (sigma is in units of the finest spacing).

    Parameters
    ----------
    image : Image or ndarray
        Any image, 2-D or volume.
    sigmas : sequence of float, default (1, 2, 4)
        Gaussian scales in pixels.

    Returns
    -------
    ndarray of shape ``image.spatial_shape + (3 * len(sigmas),)``, float32
        For each sigma in turn: mean, std, gradient magnitude.
    """
    image = _to_image(image)
    sigmas = _check_sigmas(sigmas)
    smoother = _Smoother(_spacing(image))
    lum = _luminance(image)
    valid = image.valid
    all_valid = bool(valid.all())
    n_valid = lum.size if all_valid else int(np.count_nonzero(valid))
    # Subtract the mean so that E[x^2] - E[x]^2 in float32 does not cancel
    # catastrophically on data with a large offset (e.g. uint16 counts).
    if n_valid == 0:
        offset = 0.0
    elif all_valid:
        offset = float(np.mean(lum, dtype=np.float64))
    else:
        offset = float(np.mean(lum, where=valid, dtype=np.float64))
    lum -= np.float32(offset)
    weight = None
    if not all_valid:
        lum[~valid] = 0.0
        weight = valid.astype(np.float32)
    square = lum * lum

    out = np.empty(lum.shape + (3 * len(sigmas),), np.float32)
    for i, sigma in enumerate(sigmas):
        mean = smoother.blur(lum, sigma)
        mean_sq = smoother.blur(square, sigma)
        if weight is not None:
            norm = smoother.blur(weight, sigma)
            np.maximum(norm, _MIN_WEIGHT, out=norm)
            mean /= norm
            mean_sq /= norm
            del norm
        out[..., 3 * i + 2] = smoother.gradient_magnitude(mean)
        mean_sq -= mean * mean
        np.maximum(mean_sq, 0.0, out=mean_sq)
        out[..., 3 * i + 1] = np.sqrt(mean_sq, out=mean_sq)
        mean += np.float32(offset)
        out[..., 3 * i] = mean
    return out


def contrast(image: ImageLike, *, sigma: float = 16.0) -> np.ndarray:
    """Luminance minus its Gaussian-weighted local mean: background subtraction.

    Removes illumination and background that vary slowly compared with
    ``sigma``, such as the uneven field and out-of-focus glow of fluorescence
    microscopy, so that one threshold (one pair of mixture components) fits
    the whole image.  Choose ``sigma`` about the size of the objects (e.g.
    the radius to diameter of a cell nucleus): structures much larger than
    ``sigma`` are flattened away.  On ``sample_images/nuclei.tif`` (nuclei
    20-30 px across) K = 2 on ``contrast`` reaches foreground Dice 0.854, and
    0.890 with ``smoothing=1``, against 0.820 on the raw intensity.
    Invalid pixels (``image.valid`` False) are left out of the local mean
    (normalised convolution); a ``mask`` given to :func:`gmmseg.segment`
    only limits which pixels are segmented, so masked-out valid pixels still
    count as background here.  Volumes honour anisotropic spacing as in
    :func:`texture`.  The scale is set through the API
    (``FeatureItem("contrast", params={"sigma": 8})``); the CLI's
    ``contrast`` uses 16 px.

    Parameters
    ----------
    image : Image or ndarray
        Any image, 2-D or volume; its luminance is used (see :func:`gray`).
    sigma : float, default 16
        Scale of the background, in pixels (of the finest spacing).

    Returns
    -------
    ndarray of shape ``image.spatial_shape + (1,)``, float32

    Examples
    --------
    >>> img = np.full((32, 32), 10.0, np.float32)
    >>> img[:, 16:] += 5.0          # a brighter half: background, not objects
    >>> img[8, 8] += 20.0           # the same object on either half
    >>> img[8, 24] += 20.0
    >>> c = contrast(img, sigma=2)[..., 0]
    >>> print(f"{c[8, 8]:.1f} {c[8, 24]:.1f} {abs(c[20, 4]):.1f} {abs(c[20, 28]):.1f}")
    19.2 19.2 0.0 0.0
    """
    image = _to_image(image)
    sigma = _check_sigma(sigma)
    smoother = _Smoother(_spacing(image))
    lum = _luminance(image)
    valid = image.valid
    if valid.all():
        background = smoother.blur(lum, sigma)
    else:
        lum[~valid] = 0.0
        background = smoother.blur(lum, sigma)
        norm = smoother.blur(valid.astype(np.float32), sigma)
        np.maximum(norm, _MIN_WEIGHT, out=norm)
        background /= norm
    lum -= background
    return lum[..., np.newaxis]


# ---------------------------------------------------------------------------
# registry: builder, its column names, and the checks it needs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Builder:
    func: Callable[..., np.ndarray]
    # columns(image, **params) -> column names; raises the builder's own
    # ValueError when the image does not suit it, before anything is computed.
    columns: Callable[..., list[str]]
    # pixel_map(image, **params) -> _PixelMap for per-pixel features, which the
    # extractor writes straight into its matrix without a full-size block.
    pixel_map: Callable[..., _PixelMap] | None = None


def _lab_columns(image: Image) -> list[str]:
    if image.n_channels == 1:
        return ["L"]
    _require_rgb(image, "lab")
    return ["L", "a", "b"]


def _rgb_columns(image: Image) -> list[str]:
    _require_rgb(image, "rgb")
    return ["R", "G", "B"]


def _hsv_columns(image: Image) -> list[str]:
    _require_rgb(image, "hsv")
    return ["hue_cos", "hue_sin", "saturation", "value"]


def _bands_columns(image: Image, *, bands: Sequence[int] | None = None) -> list[str]:
    indices = _band_indices(bands, image.n_channels)
    if indices is None:
        indices = list(range(image.n_channels))
    names = tuple(image.channels)
    if len(names) == image.n_channels:
        return [str(names[i]) for i in indices]
    return [f"band{i + 1}" for i in indices]


def _position_columns(image: Image) -> list[str]:
    _spacing(image)
    return ["x", "y"] if len(image.spatial_shape) == 2 else ["z", "y", "x"]


def _texture_columns(image: Image, *, sigmas: Sequence[float] = (1.0, 2.0, 4.0)) -> list[str]:
    _spacing(image)
    return [
        f"{kind}_s{sigma:g}" for sigma in _check_sigmas(sigmas) for kind in ("mean", "std", "grad")
    ]


def _contrast_columns(image: Image, *, sigma: float = 16.0) -> list[str]:
    _spacing(image)
    return [f"contrast_s{_check_sigma(sigma):g}"]


FEATURE_BUILDERS: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType(
    {
        "lab": lab,
        "rgb": rgb,
        "hsv": hsv,
        "gray": gray,
        "bands": bands,
        "position": position,
        "texture": texture,
        "contrast": contrast,
    }
)
"""Named feature builders, ``name -> f(image, **params) -> (..., d) float32``."""

_BUILDERS: dict[str, _Builder] = {
    "lab": _Builder(lab, _lab_columns, _lab_map),
    "rgb": _Builder(rgb, _rgb_columns, _rgb_map),
    "hsv": _Builder(hsv, _hsv_columns, _hsv_map),
    "gray": _Builder(gray, lambda image: ["gray"], _gray_map),
    "bands": _Builder(bands, _bands_columns, _bands_map),
    "position": _Builder(position, _position_columns, _position_map),
    "texture": _Builder(texture, _texture_columns),
    "contrast": _Builder(contrast, _contrast_columns),
}
_KNOWN = ", ".join(["auto", *sorted(_BUILDERS)])


def default_feature_names(image: ImageLike, *, pooled: bool = False) -> list[str]:
    """Feature names that ``"auto"`` stands for on this image.

    Parameters
    ----------
    image : Image or ndarray
    pooled : bool, default False
        True when one model is fitted on pixels pooled from many images
        (:meth:`FeatureExtractor.fit_many`, shared models): position is
        then left out of the photo default.

    Returns
    -------
    list of str
        ``["lab", "position"]`` for a 2-D RGB photo, ``["lab"]`` for RGB
        rasters read by rasterio (georeferenced scenes), RGB volumes and
        pooled fits, ``["gray"]`` for single-channel images, ``["bands"]``
        for everything else.

    Notes
    -----
    Position is part of the photo default because segments of photos are
    mostly compact: on 50 BSDS500 validation photos (ODS over K = 2..10) it
    raised PRI from 0.719 to 0.747 and Covering from 0.419 to 0.458, and
    lowered VoI from 2.343 to 2.251 bits (``docs/quality.md``).  Grey
    images (microscopy, medical slices) and rasters have classes spread over
    the whole scene, where position would split them, and a model shared by
    many images should mean the same class wherever it appears.  With
    position in the model, a pixel's log-likelihood (the anomaly map) also
    says how usual its colour is *where it is*.
    """
    image = _to_image(image)
    if image.is_rgb:
        return ["lab", "position"] if image.is_photo and not pooled else ["lab"]
    if image.n_channels == 1:
        return ["gray"]
    return ["bands"]


# ---------------------------------------------------------------------------
# feature specs
# ---------------------------------------------------------------------------


def _check_weight(weight: Any, name: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)):
        raise TypeError(f"weight of feature {name!r} must be a number, got {weight!r}")
    value = float(weight)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"weight of feature {name!r} must be a finite number > 0, got {weight!r}")
    return value


@dataclass(frozen=True)
class FeatureItem:
    """One entry of a feature spec.

    Parameters
    ----------
    name : str
        A builder name (see ``FEATURE_BUILDERS``), ``"auto"``, or the name of
        a user callable.
    weight : float, default 1
        Multiplies the item's columns after standardisation (> 0).
    params : mapping, optional
        Keyword arguments for the builder, e.g. ``{"sigmas": (1, 8)}``.
    func : callable, optional
        A user feature ``func(image) -> array`` of shape ``spatial_shape`` or
        ``spatial_shape + (d,)``; ``name`` then only labels its columns.
    """

    name: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)
    func: Callable[[Image], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"feature name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "weight", _check_weight(self.weight, self.name))
        if not isinstance(self.params, Mapping):
            raise TypeError(
                f"params of feature {self.name!r} must be a mapping, "
                f"got {type(self.params).__name__}"
            )
        object.__setattr__(self, "params", dict(self.params))
        if self.func is not None:
            if not callable(self.func):
                raise TypeError(f"func of feature {self.name!r} must be callable")
            if self.params:
                raise ValueError(
                    f"feature {self.name!r} is a callable; params apply to named builders only"
                )
            return
        if self.name == "auto":
            if self.params:
                raise ValueError("feature 'auto' takes no params")
            return
        if self.name not in _BUILDERS:
            raise ValueError(f"unknown feature {self.name!r}; known features: {_KNOWN}")
        try:
            inspect.signature(_BUILDERS[self.name].func).bind(None, **self.params)
        except TypeError as err:
            raise TypeError(f"bad params for feature {self.name!r}: {err}") from err

    @property
    def token(self) -> str:
        """The item as written in a spec string: ``name`` or ``name:weight``."""
        if self.weight == 1.0:
            return self.name
        short = format(self.weight, "g")
        return f"{self.name}:{short if float(short) == self.weight else repr(self.weight)}"


# "+" separates features, except inside a number's exponent ("1e+2").
_SEPARATOR = re.compile(r",|(?<![0-9][eE])\+")


def parse_feature_spec(spec: str) -> list[FeatureItem]:
    """Parse a CLI feature spec such as ``"lab,position:0.5,texture"``.

    Parameters
    ----------
    spec : str
        Feature names separated by ``,`` or ``+``; each may carry a column
        weight as ``name:weight`` (a number > 0). Names are case-insensitive.
        ``auto`` stands for :func:`default_feature_names` of the image.
        Builder parameters (e.g. texture ``sigmas``) are set through the
        Python API (:class:`FeatureItem`), not in the string.

    Returns
    -------
    list of FeatureItem

    Raises
    ------
    ValueError
        On an empty spec or entry, an unknown name (the message lists the known
        ones), a bad weight, or a name given twice.

    Examples
    --------
    >>> [(i.name, i.weight) for i in parse_feature_spec("lab+position:0.5")]
    [('lab', 1.0), ('position', 0.5)]
    """
    if not isinstance(spec, str):
        raise TypeError(f"feature spec must be a string, got {type(spec).__name__}")
    if not spec.strip():
        raise ValueError("feature spec is empty; give e.g. 'auto' or 'lab,position'")
    items: list[FeatureItem] = []
    for token in _SEPARATOR.split(spec):
        token = token.strip()
        if not token:
            raise ValueError(f"feature spec {spec!r} has an empty entry")
        name, colon, weight_text = token.partition(":")
        name = name.strip().lower()
        if name != "auto" and name not in _BUILDERS:
            raise ValueError(
                f"unknown feature {name!r} in spec {spec!r}; known features: {_KNOWN}"
            )
        weight = 1.0
        if colon:
            try:
                weight = float(weight_text)
            except ValueError as err:
                raise ValueError(
                    f"weight of feature {name!r} in spec {spec!r} must be a number > 0, "
                    f"got {weight_text.strip()!r}"
                ) from err
        if any(item.name == name for item in items):
            raise ValueError(f"feature {name!r} appears twice in spec {spec!r}")
        items.append(FeatureItem(name, weight))
    return items


def _callable_name(func: Callable, taken: set[str]) -> str:
    base = getattr(func, "__name__", "")
    if not base.isidentifier():  # lambdas, partials, callable objects
        base = "custom"
    name, i = base, 1
    while name in taken:
        name, i = f"{base}{i}", i + 1
    return name


def _normalize_spec(features: Any) -> list[FeatureItem]:
    """Turn any accepted ``features`` value into a list of FeatureItem."""
    if isinstance(features, str):
        return parse_feature_spec(features)
    entries = [features] if isinstance(features, FeatureItem) or callable(features) else features
    try:
        entries = list(entries)
    except TypeError as err:
        raise TypeError(
            "features must be a spec string, a FeatureItem, a callable or a list of "
            f"these; got {type(features).__name__}"
        ) from err
    if not entries:
        raise ValueError("features must name at least one feature, got an empty list")
    items: list[FeatureItem] = []
    for entry in entries:
        if isinstance(entry, str):
            items.extend(parse_feature_spec(entry))
        elif isinstance(entry, FeatureItem):
            items.append(entry)
        elif callable(entry):
            taken = {item.name for item in items}
            items.append(FeatureItem(_callable_name(entry, taken), func=entry))
        else:
            raise TypeError(
                "each feature must be a name, a FeatureItem or a callable; "
                f"got {type(entry).__name__}"
            )
    return items


def _check_pca(pca: Any) -> int | float | None:
    if pca is None:
        return None
    if isinstance(pca, (int, np.integer)) and not isinstance(pca, bool):
        if pca < 1:
            raise ValueError(f"pca must be a number of components >= 1, got {pca}")
        return int(pca)
    if isinstance(pca, (float, np.floating)):
        if not 0.0 < pca < 1.0:
            raise ValueError(
                f"pca as a float is the variance fraction to keep and must be in (0, 1), got {pca}"
            )
        return float(pca)
    raise TypeError(f"pca must be None, an int or a float in (0, 1), got {pca!r}")


def _jsonable(value: Any, where: str) -> Any:
    """A JSON-ready copy of a builder parameter (tuples become lists)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    raise ValueError(f"{where} = {value!r} cannot be stored as JSON")


# ---------------------------------------------------------------------------
# row statistics (float64 accumulation over float32 rows, chunked)
# ---------------------------------------------------------------------------


def _chunk_rows(n_columns: int) -> int:
    return max(1024, _CHUNK_ELEMENTS // max(n_columns, 1))


def _column_mean_std(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std of each column of ``X`` (n, D), in one pass.

    Sums of ``x - shift`` and its square are accumulated in float64, with
    ``shift`` a rough mean from a strided subset, so ``E[d^2] - E[d]^2`` does
    not cancel even for columns with a large offset.
    """
    n, d = X.shape
    shift = X[:: max(1, n // 4096)].mean(axis=0, dtype=np.float64).astype(np.float32)
    s1 = np.zeros(d)
    s2 = np.zeros(d)
    for r0 in range(0, n, _SMALL_CHUNK_ROWS):
        dev = X[r0 : r0 + _SMALL_CHUNK_ROWS] - shift
        s1 += np.einsum("ij->j", dev, dtype=np.float64)
        s2 += np.einsum("ij,ij->j", dev, dev, dtype=np.float64)
    mean_dev = s1 / n
    return shift + mean_dev, np.sqrt(np.maximum(s2 / n - mean_dev * mean_dev, 0.0))


def _covariance(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    n, d = X.shape
    step = _chunk_rows(d)
    cov = np.zeros((d, d))
    for r0 in range(0, n, step):
        chunk = X[r0 : r0 + step].astype(np.float64)
        chunk -= mean
        cov += chunk.T @ chunk
    return cov / n


def _affine_in_place(X: np.ndarray, offset: np.ndarray, factor: np.ndarray) -> None:
    """``X = (X - offset) * factor`` column-wise, in float32, without temporaries."""
    offset32 = offset.astype(np.float32)
    factor32 = factor.astype(np.float32)
    subtract, multiply = bool(np.any(offset32 != 0)), bool(np.any(factor32 != 1))
    # Small chunks keep both operations in cache.
    for r0 in range(0, X.shape[0], _SMALL_CHUNK_ROWS):
        chunk = X[r0 : r0 + _SMALL_CHUNK_ROWS]
        if subtract:
            chunk -= offset32
        if multiply:
            chunk *= factor32


# ---------------------------------------------------------------------------
# FeatureExtractor
# ---------------------------------------------------------------------------


class FeatureExtractor:
    """Build, standardise, weight and optionally PCA-reduce per-pixel features.

    Parameters
    ----------
    features : str, FeatureItem, callable, or list of these, default "auto"
        A spec string (``"lab,position:0.5"``, see :func:`parse_feature_spec`),
        or a list mixing builder names, :class:`FeatureItem` and user callables
        ``f(image) -> array`` of shape ``spatial_shape`` (one column) or
        ``spatial_shape + (d,)``. Callables receive the :class:`~gmmseg.io.Image`.
    standardize : bool, default True
        Centre each column on its mean and divide by its std over the fitted
        valid rows (a constant column is only centred). With False the columns
        keep their units (only weights apply).
    pca : int or float, optional
        Keep this many principal components (int), or the fewest components
        explaining at least this fraction of the variance (float in (0, 1)).
        Computed after standardisation and weighting.

    Attributes
    ----------
    items_ : list of FeatureItem
        The spec with ``"auto"`` resolved for the fitted image.
    names_ : list of str
        Column names before PCA, e.g. ``["L", "a", "b", "x", "y"]``.
    n_features_ : int
        Number of output columns (after PCA).
    mean_, scale_ : (D,) float64 ndarray
        Subtracted mean and divisor of each column before PCA (0 and 1 when
        ``standardize=False``).
    weights_ : (D,) float64 ndarray
        Column weights from the spec.
    pca_components_ : (n_features_, D) float64 ndarray or None
        Principal axes (rows), largest variance first.
    pca_mean_ : (D,) float64 ndarray or None
    explained_variance_ratio_ : (n_features_,) float64 ndarray or None
    input_channels_ : int
        Channel count of the fitted image; ``transform`` requires the same.
    spatial_ndim_ : int
        2 for images, 3 for volumes.

    Examples
    --------
    >>> import numpy as np
    >>> from gmmseg.io import Image
    >>> rng = np.random.default_rng(0)
    >>> img = Image(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
    ...             np.ones((8, 8), bool), channels=("R", "G", "B"))
    >>> fx = FeatureExtractor("lab,position:0.5")
    >>> X = fx.fit_transform(img)
    >>> X.shape, X.dtype, fx.names_
    ((64, 5), dtype('float32'), ['L', 'a', 'b', 'x', 'y'])
    """

    def __init__(
        self,
        features: Any = "auto",
        *,
        standardize: bool = True,
        pca: int | float | None = None,
    ):
        if not isinstance(standardize, (bool, np.bool_)):
            raise TypeError(f"standardize must be True or False, got {standardize!r}")
        self.features = features
        self.standardize = bool(standardize)
        self.pca = _check_pca(pca)
        self._items = _normalize_spec(features)

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor({self.spec_string!r}, standardize={self.standardize}, "
            f"pca={self.pca!r})"
        )

    @property
    def spec_string(self) -> str:
        """The spec as a string, e.g. ``"lab,position:0.5"`` (``auto`` resolved once fitted).

        Builder params are not shown; callables appear by their name.
        """
        items = getattr(self, "items_", self._items)
        return ",".join(item.token for item in items)

    @property
    def is_fitted(self) -> bool:
        """Whether fit statistics are available."""
        return hasattr(self, "mean_")

    # -- building -----------------------------------------------------------

    def _resolve(self, image: Image, *, pooled: bool = False) -> list[FeatureItem]:
        # A name given besides "auto" keeps its own weight and is not repeated.
        named = {item.name for item in self._items if item.func is None}
        items: list[FeatureItem] = []
        for item in self._items:
            if item.name == "auto" and item.func is None:
                items.extend(FeatureItem(n, item.weight)
                             for n in default_feature_names(image, pooled=pooled)
                             if n not in named)
            else:
                items.append(item)
        return items

    def _raw_rows(
        self, image: Image, items: list[FeatureItem], mask: np.ndarray | None, n_rows: int
    ) -> tuple[np.ndarray, list[str], list[int]]:
        """Unscaled feature rows of the valid pixels, in C order.

        Returns the (n_rows, D) float32 matrix, the column names and the width
        of each item. ``mask`` is the flat valid mask, None when all are valid.
        """
        spatial = tuple(image.spatial_shape)
        # Column names first: checks every named builder against the image
        # before any heavy computation. Callables must run to reveal their width.
        blocks: list[np.ndarray | None] = []
        names: list[str] = []
        widths: list[int] = []
        for item in items:
            if item.func is None:
                cols = _BUILDERS[item.name].columns(image, **item.params)
                blocks.append(None)
            else:
                block = self._call_user(item, image, spatial)
                cols = [item.name] if block.shape[-1] == 1 else [
                    f"{item.name}_{j}" for j in range(block.shape[-1])
                ]
                blocks.append(block)
            names.extend(cols)
            widths.append(len(cols))

        X = np.empty((n_rows, len(names)), np.float32)
        start = 0
        for item, block, width in zip(items, blocks, widths):
            columns = X[:, start : start + width]
            start += width
            if block is None:
                builder = _BUILDERS[item.name]
                if builder.pixel_map is not None:
                    _map_rows(image.data, builder.pixel_map(image, **item.params), mask, columns)
                    continue
                block = builder.func(image, **item.params)
            _copy_rows(columns, block.reshape(-1, width), mask)
            del block
        _check_finite(X, items, widths)
        return X, names, widths

    @staticmethod
    def _call_user(item: FeatureItem, image: Image, spatial: tuple[int, ...]) -> np.ndarray:
        try:
            block = np.asarray(item.func(image))
        except Exception as err:
            raise ValueError(
                f"custom feature {item.name!r} failed: {type(err).__name__}: {err}"
            ) from err
        if block.dtype.kind not in "biuf":
            raise TypeError(
                f"custom feature {item.name!r} must return real numbers, got dtype {block.dtype}"
            )
        if block.shape == spatial:
            return block[..., np.newaxis]
        if block.ndim == len(spatial) + 1 and block.shape[:-1] == spatial and block.shape[-1] > 0:
            return block
        raise ValueError(
            f"custom feature {item.name!r} returned shape {block.shape}; expected {spatial} "
            f"or {spatial} + (d,)"
        )

    @staticmethod
    def _mask(image: Image, valid: np.ndarray | None) -> tuple[np.ndarray | None, int]:
        mask = image.valid
        if valid is not None:
            valid = np.asarray(valid)
            if valid.dtype != bool:
                raise TypeError(f"valid must be a boolean array, got dtype {valid.dtype}")
            if valid.shape != tuple(image.spatial_shape):
                raise ValueError(
                    f"valid must have the image's spatial shape {tuple(image.spatial_shape)}, "
                    f"got {valid.shape}"
                )
            mask = mask & valid
        n = int(np.count_nonzero(mask))
        if n == mask.size:
            return None, n
        return mask.reshape(-1), n

    # -- fitting and applying -------------------------------------------------

    def fit_transform(
        self,
        image: ImageLike,
        *,
        valid: np.ndarray | None = None,
        sample: int | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> np.ndarray:
        """Fit the column statistics (and PCA) on an image and return its features.

        Parameters
        ----------
        image : Image or ndarray
            2-D image ``(H, W, C)`` or volume ``(Z, H, W, C)``; not modified.
        valid : bool ndarray of shape ``image.spatial_shape``, optional
            Extra mask, combined (AND) with ``image.valid``.
        sample : int, optional
            Estimate the statistics on this many randomly chosen valid rows
            instead of all of them (faster on huge images). Default: all rows,
            exact and deterministic.
        random_state : int or numpy Generator, optional
            Seed for ``sample``.

        Returns
        -------
        X : (n_valid, n_features_) float32 C-contiguous ndarray
            One row per valid pixel, in C order of the spatial shape.

        Raises
        ------
        ValueError
            If no pixel is valid, a builder does not suit the image, a feature
            is NaN or infinite at a valid pixel, or ``pca`` asks for more
            components than there are columns.
        """
        image = _to_image(image)
        items = self._resolve(image)
        mask, n_valid = self._mask(image, valid)
        if n_valid == 0:
            raise ValueError(
                f"image {image.name!r} has no valid pixels to fit the feature statistics on"
            )
        if sample is not None and (
            isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1
        ):
            raise ValueError(f"sample must be a positive number of rows, got {sample!r}")

        X, names, widths = self._raw_rows(image, items, mask, n_valid)
        fit_rows = X
        if sample is not None and sample < n_valid:
            rng = np.random.default_rng(random_state)
            fit_rows = X[np.sort(rng.choice(n_valid, size=int(sample), replace=False))]
        self._fit_statistics(fit_rows, items, names, widths, image, also=X)
        del fit_rows
        logger.debug(
            "features %s on %s: %d valid rows, columns %s -> %d",
            self.spec_string, image.name, n_valid, names, self.n_features_,
        )
        return self._project(X)

    def _fit_statistics(
        self,
        fit_rows: np.ndarray,
        items: list[FeatureItem],
        names: list[str],
        widths: list[int],
        image: Image,
        *,
        also: np.ndarray | None = None,
    ) -> None:
        """Fit the column statistics (and PCA) on raw rows and store the fitted state.

        ``fit_rows`` (n, D) raw float32 rows are standardised and weighted in
        place, and so is ``also`` (the full matrix ``fit_rows`` was sampled
        from) when given.  ``image`` is a representative image: its channel
        count and number of spatial dimensions are what ``transform`` will
        require.
        """
        d = fit_rows.shape[1]
        weights = np.repeat([item.weight for item in items], widths).astype(np.float64)
        if self.standardize:
            mean, std = _column_mean_std(fit_rows)
            # A (numerically) constant column is centred but not scaled.
            flat = (std == 0) | (std <= np.finfo(np.float32).eps * np.abs(mean))
            scale = np.where(flat, 1.0, std)
        else:
            mean, scale = np.zeros(d), np.ones(d)
        factor = weights / scale
        if also is not None and also is not fit_rows:
            _affine_in_place(also, mean, factor)
        _affine_in_place(fit_rows, mean, factor)

        components = pca_mean = ratio = None
        if self.pca is not None:
            components, pca_mean, ratio = _fit_pca(fit_rows, self.pca)

        self.items_ = items
        self.names_ = names
        self._widths = widths
        self.mean_ = mean
        self.scale_ = scale
        self.weights_ = weights
        self.pca_components_ = components
        self.pca_mean_ = pca_mean
        self.explained_variance_ratio_ = ratio
        self.input_channels_ = int(image.n_channels)
        self.spatial_ndim_ = len(image.spatial_shape)
        self.n_features_ = d if components is None else components.shape[0]

    def fit_many(
        self,
        images: Iterable[ImageLike],
        *,
        per_image: int | None = 20_000,
        random_state: int | np.random.Generator | None = None,
    ) -> np.ndarray:
        """Fit the column statistics (and PCA) on rows pooled from several images.

        The images are visited one at a time: each one's feature rows are
        computed, at most ``per_image`` of its valid rows are drawn at random
        and kept, and the image is released before the next is read, so
        memory holds one image plus the pooled sample.  Every image counts
        with at most ``per_image`` rows, so a large image does not drown the
        small ones.  Use this to fit one model whose labels mean the same in
        every image.

        Parameters
        ----------
        images : iterable of Image or ndarray
            2-D images or volumes, all with the same channel count and number
            of spatial dimensions (sizes may differ).  A generator that reads
            files lazily keeps one image in memory at a time.  Images without
            a valid pixel contribute no rows.
        per_image : int or None, default=20000
            Rows drawn from each image (all valid rows when it has fewer, or
            when None).
        random_state : int or numpy Generator, optional
            Seeds the per-image draws (one generator for the whole sequence).

        Returns
        -------
        X : (n_pooled, n_features_) float32 C-contiguous ndarray
            The pooled rows with the fitted statistics applied, image by image
            in the order given, each image's rows in C order of its pixels.

        Raises
        ------
        ValueError
            If ``images`` is empty, no image has a valid pixel, or the images
            do not all give the same feature columns (the message names the
            first image that differs).

        Examples
        --------
        >>> import numpy as np
        >>> from gmmseg.io import Image
        >>> rng = np.random.default_rng(0)
        >>> imgs = [Image(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        ...               np.ones((8, 8), bool), channels=("R", "G", "B")) for _ in range(3)]
        >>> fx = FeatureExtractor("lab")
        >>> fx.fit_many(imgs, per_image=10, random_state=0).shape
        (30, 3)
        """
        if per_image is not None and (
            isinstance(per_image, bool)
            or not isinstance(per_image, (int, np.integer))
            or per_image < 1
        ):
            raise ValueError(
                f"per_image must be a positive number of rows or None, got {per_image!r}"
            )
        rng = np.random.default_rng(random_state)
        pooled: list[np.ndarray] = []
        first: Image | None = None
        items: list[FeatureItem] = []
        names: list[str] = []
        widths: list[int] = []
        n_images = 0
        for image in images:
            image = _to_image(image)
            n_images += 1
            if first is None:
                first, items = image, self._resolve(image, pooled=True)
            else:
                self._check_like(image, first, items)
            mask, n_valid = self._mask(image, None)
            if n_valid == 0:
                logger.debug("features %s: %s has no valid pixel", self.spec_string, image.name)
                continue
            X, image_names, image_widths = self._raw_rows(image, items, mask, n_valid)
            if not widths:
                names, widths = image_names, image_widths
            elif image_widths != widths:
                raise ValueError(
                    f"image {image.name!r} gives feature columns {image_names}, but the "
                    f"images before it gave {names}"
                )
            if per_image is not None and per_image < n_valid:
                X = X[np.sort(rng.choice(n_valid, size=int(per_image), replace=False))]
            pooled.append(X)
            del X
        if first is None:
            raise ValueError("fit_many needs at least one image, got none")
        if not pooled:
            raise ValueError(
                f"none of the {n_images} image(s) has a valid pixel to fit the feature "
                "statistics on"
            )
        rows = pooled[0] if len(pooled) == 1 else np.concatenate(pooled)
        del pooled
        self._fit_statistics(rows, items, names, widths, first)
        logger.debug(
            "features %s on %d images: %d pooled rows, columns %s -> %d",
            self.spec_string, n_images, rows.shape[0], names, self.n_features_,
        )
        return self._project(rows)

    def _check_like(self, image: Image, first: Image, items: list[FeatureItem]) -> None:
        """Raise unless ``image`` gives the same features as ``first`` (see fit_many)."""
        ndim, first_ndim = len(image.spatial_shape), len(first.spatial_shape)
        if ndim != first_ndim:
            raise ValueError(
                f"image {image.name!r} has {ndim} spatial dimensions, but {first.name!r} "
                f"has {first_ndim}; fit 2-D images and volumes separately"
            )
        if image.n_channels != first.n_channels:
            raise ValueError(
                f"image {image.name!r} has {image.n_channels} channel(s), but "
                f"{first.name!r} has {first.n_channels}; all images must have the same bands"
            )
        resolved = self._resolve(image, pooled=True)
        if resolved != items:
            raise ValueError(
                f"features {self.spec_string!r} resolve to "
                f"{','.join(i.token for i in resolved)!r} on image {image.name!r} but to "
                f"{','.join(i.token for i in items)!r} on {first.name!r}"
            )

    def fit(
        self,
        image: ImageLike,
        *,
        valid: np.ndarray | None = None,
        sample: int | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> FeatureExtractor:
        """Fit the statistics only; see :meth:`fit_transform`. Returns self."""
        self.fit_transform(image, valid=valid, sample=sample, random_state=random_state)
        return self

    def transform(self, image: ImageLike, *, valid: np.ndarray | None = None) -> np.ndarray:
        """Features of an image with the fitted statistics.

        Parameters
        ----------
        image : Image or ndarray
            Must have the fitted image's channel count and number of spatial
            dimensions; its size may differ.
        valid : bool ndarray of shape ``image.spatial_shape``, optional
            Extra mask, combined (AND) with ``image.valid``.

        Returns
        -------
        X : (n_valid, n_features_) float32 C-contiguous ndarray
            ``n_valid`` may be 0.

        Raises
        ------
        ValueError
            If the extractor is not fitted or the image does not match it.
        """
        if not self.is_fitted:
            raise ValueError("this FeatureExtractor is not fitted yet; call fit_transform first")
        image = _to_image(image)
        ndim = len(image.spatial_shape)
        if ndim != self.spatial_ndim_:
            kinds = {2: "2-D images", 3: "volumes"}
            raise ValueError(
                f"the feature extractor was fitted on {kinds.get(self.spatial_ndim_)}; "
                f"image {image.name!r} has {ndim} spatial dimensions"
            )
        if image.n_channels != self.input_channels_:
            raise ValueError(
                f"features {self.spec_string!r} were fitted on images with "
                f"{self.input_channels_} channel(s); image {image.name!r} has {image.n_channels}"
            )
        mask, n_valid = self._mask(image, valid)
        X, names, widths = self._raw_rows(image, self.items_, mask, n_valid)
        if widths != self._widths:
            raise ValueError(
                f"image {image.name!r} gives feature columns {names}, but the extractor was "
                f"fitted on columns {self.names_}"
            )
        _affine_in_place(X, self.mean_, self.weights_ / self.scale_)
        return self._project(X)

    def _project(self, X: np.ndarray) -> np.ndarray:
        if self.pca_components_ is None:
            return X
        n = X.shape[0]
        k = self.pca_components_.shape[0]
        basis = self.pca_components_.T.astype(np.float32)
        centre = self.pca_mean_.astype(np.float32)
        out = np.empty((n, k), np.float32)
        step = _chunk_rows(X.shape[1])
        for r0 in range(0, n, step):
            np.matmul(X[r0 : r0 + step] - centre, basis, out=out[r0 : r0 + step])
        return out

    # -- persistence -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (spec and fitted statistics).

        Returns
        -------
        dict
            Only lists, numbers, strings, booleans and None.

        Raises
        ------
        ValueError
            If the spec holds a user callable (code cannot be stored) or a
            builder parameter that is not JSON data.
        """
        items = getattr(self, "items_", self._items)
        features = []
        for item in items:
            if item.func is not None:
                raise ValueError(
                    f"feature {item.name!r} is a user callable and cannot be saved; "
                    "use named features to store the extractor"
                )
            features.append(
                {
                    "name": item.name,
                    "weight": item.weight,
                    "params": _jsonable(dict(item.params), f"params of feature {item.name!r}"),
                }
            )
        fitted = None
        if self.is_fitted:
            has_pca = self.pca_components_ is not None
            fitted = {
                "names": list(self.names_),
                "widths": list(self._widths),
                "mean": self.mean_.tolist(),
                "scale": self.scale_.tolist(),
                "weights": self.weights_.tolist(),
                "pca_components": self.pca_components_.tolist() if has_pca else None,
                "pca_mean": self.pca_mean_.tolist() if has_pca else None,
                "explained_variance_ratio": (
                    self.explained_variance_ratio_.tolist() if has_pca else None
                ),
                "input_channels": self.input_channels_,
                "spatial_ndim": self.spatial_ndim_,
            }
        return {
            "format": _DICT_FORMAT,
            "version": _DICT_VERSION,
            "features": features,
            "standardize": self.standardize,
            "pca": self.pca,
            "fitted": fitted,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureExtractor:
        """Rebuild an extractor written by :meth:`to_dict`.

        Raises
        ------
        ValueError
            If ``d`` is not such a description or is inconsistent.
        """
        if not isinstance(d, Mapping) or d.get("format") != _DICT_FORMAT:
            raise ValueError(
                f"not a gmmseg feature extractor description (format {_DICT_FORMAT!r})"
            )
        if d.get("version") != _DICT_VERSION:
            raise ValueError(
                f"feature extractor description has version {d.get('version')!r}; "
                f"this gmmseg reads version {_DICT_VERSION}"
            )
        try:
            items = [
                FeatureItem(f["name"], f["weight"], f.get("params") or {}) for f in d["features"]
            ]
            self = cls(items, standardize=d["standardize"], pca=d["pca"])
            fitted = d["fitted"]
            if fitted is None:
                return self
            names = [str(n) for n in fitted["names"]]
            widths = [int(w) for w in fitted["widths"]]
            vectors = {
                key: np.asarray(fitted[key], dtype=np.float64)
                for key in ("mean", "scale", "weights")
            }
            components = fitted["pca_components"]
            components = None if components is None else np.asarray(components, np.float64)
            pca_mean = fitted["pca_mean"]
            ratio = fitted["explained_variance_ratio"]
            n_columns = len(names)
            problems = []
            if sum(widths) != n_columns or len(widths) != len(items):
                problems.append("widths do not match the names and features")
            if any(v.shape != (n_columns,) for v in vectors.values()):
                problems.append("mean/scale/weights do not match the column names")
            if not np.all(vectors["scale"] > 0):
                problems.append("scale must be positive")
            if components is not None and (
                components.ndim != 2 or components.shape[1] != n_columns or pca_mean is None
            ):
                problems.append("pca_components do not match the column names")
            if problems:
                raise ValueError("; ".join(problems))
            self.items_ = items
            self.names_ = names
            self._widths = widths
            self.mean_ = vectors["mean"]
            self.scale_ = vectors["scale"]
            self.weights_ = vectors["weights"]
            self.pca_components_ = components
            self.pca_mean_ = None if components is None else np.asarray(pca_mean, np.float64)
            self.explained_variance_ratio_ = (
                None if components is None else np.asarray(ratio, np.float64)
            )
            self.input_channels_ = int(fitted["input_channels"])
            self.spatial_ndim_ = int(fitted["spatial_ndim"])
            self.n_features_ = n_columns if components is None else components.shape[0]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed feature extractor description: {err}") from err
        return self


def _copy_rows(dst: np.ndarray, src: np.ndarray, mask: np.ndarray | None) -> None:
    """Copy the rows of ``src`` (N, d) selected by the flat ``mask`` into ``dst``, chunked."""
    if mask is None:
        dst[...] = src
        return
    step = _chunk_rows(src.shape[1])
    pos = 0
    for r0 in range(0, src.shape[0], step):
        rows = src[r0 : r0 + step][mask[r0 : r0 + step]]
        dst[pos : pos + rows.shape[0]] = rows
        pos += rows.shape[0]


def _check_finite(X: np.ndarray, items: list[FeatureItem], widths: list[int]) -> None:
    """Raise if ``X`` holds NaN or inf, naming the first feature responsible."""
    step = _chunk_rows(X.shape[1])
    if all(np.isfinite(X[r0 : r0 + step]).all() for r0 in range(0, X.shape[0], step)):
        return
    start = 0
    for item, width in zip(items, widths):
        bad = int(np.count_nonzero(~np.isfinite(X[:, start : start + width]).all(axis=1)))
        if bad:
            raise ValueError(
                f"feature {item.name!r} is NaN or infinite at {bad} valid pixel(s); "
                "mark those pixels invalid or fix the feature"
            )
        start += width


def _fit_pca(
    X: np.ndarray, n_components: int | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal axes of the rows of ``X`` (n, D).

    Returns
    -------
    components : (k, D) float64 ndarray
        Unit rows, largest variance first; each row's largest-magnitude entry
        is positive so the result does not depend on the eigensolver's signs.
    mean : (D,) float64 ndarray
    ratio : (k,) float64 ndarray
        Explained variance ratio of each kept component.
    """
    d = X.shape[1]
    mean = X.mean(axis=0, dtype=np.float64)
    cov = _covariance(X, mean)
    variances, vectors = np.linalg.eigh(cov)
    order = np.argsort(variances)[::-1]
    variances = np.clip(variances[order], 0.0, None)
    vectors = vectors[:, order].T
    total = variances.sum()
    ratio = variances / total if total > 0 else np.full(d, 1.0 / d)
    if isinstance(n_components, int):
        if n_components > d:
            raise ValueError(
                f"pca={n_components} components requested but the features have only {d} columns"
            )
        k = n_components
    else:
        k = min(d, int(np.searchsorted(np.cumsum(ratio), n_components - 1e-12)) + 1)
    components = vectors[:k]
    signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, np.newaxis]
    return components, mean, ratio[:k]
