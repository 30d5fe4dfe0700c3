"""The named feature builders and their registry.

Owns the per-pixel builders (``lab``, ``rgb``, ``hsv``, ``gray``, ``bands``,
``position``), the registry ``FEATURE_BUILDERS`` that also lists the
neighbourhood builders (``texture``, ``contrast``, from :mod:`.neighbourhood`),
and for each builder the function that names its columns (and so their
count) and checks that the image suits it before anything is computed.
See :mod:`gmmseg.features` for the table of builders.  It does not parse
specs or validate feature names (:mod:`.spec`) and fits nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np

from ..errors import counted
from ..io import Image
from ._pixels import (
    ImageLike,
    _gray_map,
    _map_pixels,
    _PixelMap,
    _require_rgb,
    _spacing,
    _to_image,
    _unit_float,
    _unit_scale,
)
from .neighbourhood import _check_sigma, _check_sigmas, contrast, texture

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
                f"bands index {i} is out of range for an image with "
                f"{counted(n_channels, 'channel')} (0-based indices 0..{n_channels - 1})"
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


def position(image: ImageLike, *, origin: Sequence[int] | None = None,
             full_shape: Sequence[int] | None = None) -> np.ndarray:
    """Normalised pixel coordinates in physical units.

    Coordinates are ``index * spacing`` along each spatial axis, divided by the
    longest physical extent ``max((n - 1) * spacing)``, so the longest side
    spans [0, 1] and the others keep their true proportion.

    Parameters
    ----------
    image : Image or ndarray
        Any image; ``image.spacing`` (None means 1 per axis) gives the pixel size.
    origin, full_shape : sequence of int, optional
        Where ``image`` lies in a larger image, and that image's spatial
        shape: the coordinates are the larger image's (a window of it, as
        :mod:`gmmseg.pipeline.windowed` reads them).

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
    return _map_pixels(image.data, _position_map(image, origin=origin, full_shape=full_shape))


def _position_map(image: Image, *, origin: Sequence[int] | None = None,
                  full_shape: Sequence[int] | None = None) -> _PixelMap:
    shape = tuple(image.spatial_shape)
    spacing = _spacing(image)
    full = shape if full_shape is None else tuple(int(n) for n in full_shape)
    origin = (0,) * len(shape) if origin is None else tuple(int(o) for o in origin)
    longest = max((n - 1) * s for n, s in zip(full, spacing))
    if longest <= 0:
        longest = 1.0
    # Scaled coordinate of every index along each spatial axis.
    coords = [(np.arange(o, o + n) * (s / longest)).astype(np.float32)
              for o, n, s in zip(origin, shape, spacing)]

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


def _position_columns(image: Image, *, origin: Sequence[int] | None = None,
                      full_shape: Sequence[int] | None = None) -> list[str]:
    _spacing(image)
    return ["x", "y"] if len(image.spatial_shape) == 2 else ["z", "y", "x"]


def _texture_columns(image: Image, *, sigmas: Sequence[float] = (1.0, 2.0, 4.0),
                     offset: float | None = None) -> list[str]:
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
