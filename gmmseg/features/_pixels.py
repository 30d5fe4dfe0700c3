"""Per-pixel machinery shared by the feature builders.

Owns the dtype policy (integers scaled to [0, 1] by their dtype's maximum),
the conversion of any image-like input to an :class:`~gmmseg.io.Image`, the
stripe-by-stripe evaluation of per-pixel features (bounded temporaries
whatever the image size), pixel spacing checks, and the luminance that
several builders start from.  It defines no named feature and fits nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from ..errors import counted
from ..io import Image, as_image

# Pixels converted per stripe by the per-pixel builders: bounds the float32
# temporaries to a few MiB whatever the image size.
_STRIPE_PIXELS = 1 << 18

ImageLike = Image | np.ndarray


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
    data: np.ndarray, features: list, mask: np.ndarray | None, out: np.ndarray
) -> None:
    """Write per-pixel features of the selected pixels into ``out``, stripe by stripe.

    Parameters
    ----------
    data : (..., W, C) ndarray
        Image data, 2-D or volume, channel-last.
    features : list of (_PixelMap, slice, ndarray or None)
        Each feature, the columns of ``out`` it goes into, and optionally a
        float32 array of ``data.shape[:-1] + (n_out,)`` that also receives
        its values at every pixel, selected or not.  All features of a
        stripe are written before the next stripe, so that the stripe's rows
        of ``out`` are written while they are in the cache.
    mask : flat bool ndarray of ``data.shape[:-1]`` size, or None for all pixels
    out : (n_selected, D) float32 C-contiguous ndarray
    """
    width = data.shape[-2]
    if width == 0 or (out.shape[0] == 0 and all(keep is None for _, _, keep in features)):
        return
    # Volumes are treated as a tall 2-D image (Z*H, W); stripes bound the
    # float32 temporaries whatever the image size.
    rows = data.reshape(-1, width, data.shape[-1])
    kept = [None if keep is None else keep.reshape(-1, width, pixel_map[0])
            for pixel_map, _, keep in features]
    step = max(1, _STRIPE_PIXELS // width)
    pos = 0
    for r0 in range(0, rows.shape[0], step):
        selected = None if mask is None else mask[r0 * width : (r0 + step) * width]
        n_rows = 0
        for ((n_out, convert), columns, _), keep in zip(features, kept):
            values = convert(rows[r0 : r0 + step], r0)
            if keep is not None:
                keep[r0 : r0 + step] = values
            values = values.reshape(-1, n_out)
            if selected is not None:
                values = values[selected]
            _put_columns(out, pos, values, columns)
            n_rows = values.shape[0]
        pos += n_rows


# OpenCV's limit on channels of an array (CV_CN_MAX).
_CV_MAX_CHANNELS = 512


def _put_columns(out: np.ndarray, pos: int, values: np.ndarray, columns: slice) -> None:
    """``out[pos:pos + len(values), columns] = values`` for a C-contiguous ``out``.

    NumPy copies a few columns into wider rows with an inner loop of a few
    elements per row; OpenCV's channel copy does the same several times
    faster, treating each row as one pixel of ``D`` channels.
    """
    m, d = values.shape
    if m == 0:
        return
    target = out[pos : pos + m]
    if d == out.shape[1]:
        target[...] = values
    elif out.shape[1] <= _CV_MAX_CHANNELS and values.dtype == out.dtype == np.float32:
        pairs = [c for j in range(d) for c in (j, columns.start + j)]
        cv2.mixChannels([np.ascontiguousarray(values).reshape(m, 1, d)],
                        [target.reshape(m, 1, out.shape[1])], pairs)
    else:
        target[:, columns] = values


def _map_pixels(data: np.ndarray, pixel_map: _PixelMap) -> np.ndarray:
    """A per-pixel feature of every pixel, shape ``data.shape[:-1] + (n_out,)``, float32."""
    out = np.empty(data.shape[:-1] + (pixel_map[0],), np.float32)
    _map_rows(data, [(pixel_map, slice(0, pixel_map[0]), None)], None,
              out.reshape(-1, pixel_map[0]))
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
            f"{counted(image.n_channels, 'channel')} {tuple(image.channels)!r} of dtype "
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

