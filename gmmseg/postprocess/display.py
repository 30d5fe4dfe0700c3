"""Pictures for looking at: display stretches, heat maps, segment colours, overlays.

Owns: turning any image into 8-bit RGB (:func:`display_rgb`), scalar maps
into colour (:func:`colormap`, :func:`heat_map`), the segment palette
(:func:`segment_colors`), segment borders (:func:`boundaries`) and colours
blended over a picture (:func:`overlay`).  Pictures are for people, not
for analysis: nothing here changes a label or measures a segment.
"""

import math
import numbers

import cv2
import numpy as np

from ._arrays import _as_int, _as_label_array, _as_mask, _check_real, _row_blocks
from ._graph import _pair_slices


# Display percentiles are taken on a regular subsample of about this many pixels.
_PERCENTILE_SAMPLE = 1 << 20


# matplotlib's "tab10", the qualitative palette most readers know.
_TAB10 = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ],
    dtype=np.uint8,
)


# Anchor colours of the heat-map colormaps at 0, 1/8, ..., 1 (matplotlib's
# perceptually uniform "magma" and "viridis", and plain grey); colormap()
# interpolates them to 256 entries, so no plotting library is needed.
_COLORMAP_ANCHORS = {
    "magma": [(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122),
              (229, 80, 100), (251, 135, 97), (254, 194, 135), (252, 253, 191)],
    "viridis": [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}


def display_rgb(data, valid=None, *, bands=None, percentiles=(2, 98), value_ranges=None):
    """An 8-bit RGB picture of any image, for looking at (not for analysis).

    - uint8 data is used as is (no rescaling); uint8 RGB comes back equal.
    - Other dtypes (16-bit, signed, float) are stretched per channel: the
      ``percentiles`` of the valid, finite pixels map to 0 and 255, values
      outside are clipped. For large images the percentiles are taken on a
      regular subsample of about a million pixels.
    - bool data maps to 0 and 255.
    - One channel (or two: the first is used) is shown as grey; three or more
      use ``bands`` or the first three channels as R, G, B.
    - Invalid pixels (``valid`` False) and non-finite values are black.

    Parameters
    ----------
    data : (H, W, C) or (H, W) ndarray
        Image data as stored. For a volume pass one slice.
    valid : (H, W) bool ndarray, optional
        Pixels to show and to take the percentiles over.
    bands : sequence of 1 or 3 int, optional
        Channel indices to show as grey (1) or as R, G, B (3), e.g.
        ``(3, 2, 1)`` for a true-colour view of a multi-band scene.
    percentiles : (float, float), default (2, 98)
        Lower and upper percentile for the stretch, ``0 <= low < high <= 100``.
    value_ranges : sequence of (float, float) or None, optional
        The stretch of each shown channel, as :func:`display_ranges` gives
        it (e.g. for a whole volume, so that its slices match); replaces
        ``percentiles``.

    Returns
    -------
    rgb : (H, W, 3) uint8 ndarray
        A new array.

    Examples
    --------
    >>> grey = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    >>> display_rgb(grey, percentiles=(0, 100))[..., 0]
    array([[  0,  64],
           [128, 255]], dtype=uint8)
    """
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3 or data.shape[-1] < 1:
        raise ValueError(
            "data must be (H, W, C) or (H, W); for a volume pass one slice, "
            f"got shape {data.shape}"
        )
    _check_real(data, "data")
    height, width, n_channels = data.shape
    valid = _as_mask(valid, (height, width))
    low, high = _check_percentiles(percentiles)
    bands = _check_bands(bands, n_channels)
    if value_ranges is None:
        value_ranges = [None] * len(bands)
    else:
        value_ranges = [None if r is None else _check_range(r, "value_ranges")
                        for r in value_ranges]
        if len(value_ranges) != len(bands):
            raise ValueError(f"value_ranges must give one range per shown channel "
                             f"({len(bands)}), got {len(value_ranges)}")

    out = np.empty((height, width, 3), dtype=np.uint8)
    if data.dtype == np.uint8 and bands == (0, 1, 2) and n_channels == 3:
        out[...] = data         # shown as is: one copy, not three strided ones
    else:
        for j, (band, limits) in enumerate(zip(bands, value_ranges)):
            channel = _channel_to_uint8(data[..., band], valid, low, high, limits)
            if len(bands) == 1:
                out[...] = channel[..., np.newaxis]
            else:
                out[..., j] = channel
    if valid is not None and not valid.all():
        out[~valid] = 0
    return out


def display_ranges(data, valid=None, *, bands=None, percentiles=(2, 98)):
    """The stretch :func:`display_rgb` gives each shown channel, over data of any shape.

    Use it to show slices of a volume (or tiles of a mosaic) alike: take the
    ranges over the whole, then pass them to ``display_rgb(...,
    value_ranges=...)`` for each part.

    Parameters
    ----------
    data : (..., C) ndarray
        E.g. a volume ``(Z, H, W, C)``.
    valid : bool ndarray of ``data.shape[:-1]``, optional
    bands, percentiles
        As for :func:`display_rgb`.

    Returns
    -------
    list of (float, float) or None
        One per shown channel; None where the channel is shown as is
        (uint8, bool).
    """
    data = np.asarray(data)
    if data.ndim < 2:
        raise ValueError(f"data must have spatial axes and a channel axis, got shape {data.shape}")
    _check_real(data, "data")
    valid = _as_mask(valid, data.shape[:-1])
    low, high = _check_percentiles(percentiles)
    ranges = []
    for band in _check_bands(bands, data.shape[-1]):
        channel = data[..., band]
        if channel.dtype in (np.uint8, np.bool_):
            ranges.append(None)
            continue
        flat = channel.reshape(-1, channel.shape[-1]) if channel.ndim > 1 else channel[None]
        mask = None if valid is None else valid.reshape(flat.shape)
        ranges.append(_stretch_range(flat, mask, low, high))
    return ranges


def percentile_range(values, valid=None, *, percentiles=(1, 99.5)):
    """``(low, high)``: the ``percentiles`` of the valid finite ``values``, of any shape.

    The range :func:`heat_map` colours by default, over a whole volume
    (on a regular subsample of about a million values for large arrays).
    """
    values = np.asarray(values)
    _check_real(values, "values")
    valid = _as_mask(valid, values.shape)
    flat = values.reshape(-1, values.shape[-1]) if values.ndim > 1 else values[None]
    mask = None if valid is None else valid.reshape(flat.shape)
    return _stretch_range(flat, mask, *_check_percentiles(percentiles))


def _check_range(value_range, name):
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be two numbers, got {value_range!r}") from err
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with low < high, got {value_range!r}")
    return lo, hi


def _check_bands(bands, n_channels):
    if bands is None:
        return (0, 1, 2) if n_channels >= 3 else (0,)
    bands = tuple(bands)
    if len(bands) not in (1, 3) or not all(
        isinstance(b, numbers.Integral) and not isinstance(b, bool) and 0 <= b < n_channels
        for b in bands
    ):
        raise ValueError(
            f"bands must be 1 or 3 channel indices in 0..{n_channels - 1}, got {bands!r}"
        )
    return bands


def _check_percentiles(percentiles):
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError) as err:
        raise TypeError(f"percentiles must be two numbers, got {percentiles!r}") from err
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    return low, high


def _channel_to_uint8(channel, valid, low, high, limits=None):
    """One (H, W) channel to uint8: as is for uint8, 0/255 for bool, else stretched."""
    if channel.dtype == np.uint8:
        return channel
    if channel.dtype == np.bool_:
        return channel.view(np.uint8) * np.uint8(255)
    lo, hi = _stretch_range(channel, valid, low, high) if limits is None else limits
    scale = 255.0 / (hi - lo)
    out = np.empty(channel.shape, dtype=np.uint8)
    for rows in _row_blocks(channel.shape[0], channel.shape[1]):
        # float64 per block: exact for every integer dtype and float range.
        with np.errstate(invalid="ignore", over="ignore"):
            block = (channel[rows].astype(np.float64) - lo) * scale
        np.clip(block, 0.0, 255.0, out=block)
        np.nan_to_num(block, copy=False, nan=0.0)
        np.rint(block, out=block)
        out[rows] = block
    return out


def _stretch_range(channel, valid, low, high):
    """Percentiles of the valid finite values, on a subsample of ~1e6 pixels."""
    step = max(1, math.ceil(math.sqrt(channel.size / _PERCENTILE_SAMPLE)))
    while True:
        sub = channel[::step, ::step]
        values = sub[valid[::step, ::step]] if valid is not None else sub.ravel()
        if values.dtype.kind == "f":
            values = values[np.isfinite(values)]
        # A sparse valid mask can be missed by the subsample; retry on all pixels.
        if values.size or step == 1:
            break
        step = 1
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, (low, high)))
    if not hi > lo:
        # Constant channel: show the common value as black, anything above as bright.
        hi = lo + 1.0
    return lo, hi


def colormap(name="magma"):
    """A 256-entry RGB colour table, dark (0) to bright (255).

    Parameters
    ----------
    name : {"magma", "viridis", "gray"}
        "magma" and "viridis" follow matplotlib's perceptually uniform
        maps of those names (interpolated from nine anchor colours).

    Returns
    -------
    table : (256, 3) uint8 ndarray

    Examples
    --------
    >>> colormap("gray")[[0, 128, 255], 0]
    array([  0, 128, 255], dtype=uint8)
    """
    if name not in _COLORMAP_ANCHORS:
        raise ValueError(f"name must be one of {tuple(_COLORMAP_ANCHORS)}, got {name!r}")
    anchors = np.asarray(_COLORMAP_ANCHORS[name], dtype=np.float64)
    at = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(t, at, anchors[:, j]) for j in range(3)], axis=1)
    return np.rint(table).astype(np.uint8)


def heat_map(values, valid=None, *, value_range=None, percentiles=(1, 99.5), cmap="magma"):
    """A scalar map as a colour picture: low values dark, high values bright.

    Parameters
    ----------
    values : (H, W) real ndarray
        For a volume pass one slice.
    valid : (H, W) bool ndarray, optional
        Pixels to show; the others, and non-finite values, are black.
    value_range : (float, float), optional
        Values mapped to the first and last colour (clipped outside).
        Default: the ``percentiles`` of the valid finite values, which
        keeps a few extreme pixels from washing out the rest.
    percentiles : (float, float), default (1, 99.5)
    cmap : {"magma", "viridis", "gray"}, default "magma"
        See :func:`colormap`.

    Returns
    -------
    picture : (H, W, 3) uint8 ndarray

    Examples
    --------
    >>> heat_map(np.array([[0.0, 1.0]]), value_range=(0, 1), cmap="gray")[..., 0]
    array([[  0, 255]], dtype=uint8)
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be (H, W); for a volume pass one slice, got {values.shape}")
    _check_real(values, "values")
    valid = _as_mask(valid, values.shape)
    table = colormap(cmap)
    if value_range is None:
        lo, hi = _stretch_range(values, valid, *_check_percentiles(percentiles))
    else:
        lo, hi = _check_range(value_range, "value_range")
    scale = 255.0 / (hi - lo)
    out = np.zeros(values.shape + (3,), dtype=np.uint8)
    for rows in _row_blocks(values.shape[0], values.shape[1]):
        with np.errstate(invalid="ignore", over="ignore"):
            block = (values[rows].astype(np.float64) - lo) * scale
        shown = np.isfinite(block)
        if valid is not None:
            shown &= valid[rows]
        index = np.rint(np.clip(np.where(shown, block, 0.0), 0.0, 255.0)).astype(np.intp)
        out[rows] = np.where(shown[..., None], table[index], 0)
    return out


def segment_colors(n):
    """A fixed palette of ``n`` distinct colours for segment labels.

    The first ten are matplotlib's "tab10"; later ones step around the hue
    circle by the golden angle with cycling saturation and value, so every
    row differs for ``n`` up to at least 3000. Same ``n``, same colours.

    Parameters
    ----------
    n : int
        Number of colours, ``>= 0``.

    Returns
    -------
    colors : (n, 3) uint8 ndarray
        Row ``k`` is the RGB colour of label ``k``.

    Examples
    --------
    >>> segment_colors(2)
    array([[ 31, 119, 180],
           [255, 127,  14]], dtype=uint8)
    """
    n = _as_int(n, "n", minimum=0)
    if n <= _TAB10.shape[0]:
        return _TAB10[:n].copy()
    j = np.arange(n - _TAB10.shape[0])
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    hue = (0.05 + j * golden) % 1.0
    sat = np.array([0.65, 0.9, 0.5])[j % 3]
    val = np.array([0.95, 0.75, 0.85, 0.6])[(j // 3) % 4]
    extra = _hsv_to_rgb(hue, sat, val)
    return np.concatenate([_TAB10, extra])


def _hsv_to_rgb(hue, sat, val):
    """Vectorised HSV (each in [0, 1]) to uint8 RGB rows."""
    sector = np.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    p = val * (1.0 - sat)
    q = val * (1.0 - sat * frac)
    t = val * (1.0 - sat * (1.0 - frac))
    sector = sector.astype(int) % 6
    table = np.stack(
        [
            np.stack([val, t, p], axis=-1),
            np.stack([q, val, p], axis=-1),
            np.stack([p, val, t], axis=-1),
            np.stack([p, q, val], axis=-1),
            np.stack([t, p, val], axis=-1),
            np.stack([val, p, q], axis=-1),
        ]
    )
    rgb = table[sector, np.arange(hue.size)]
    return np.rint(rgb * 255.0).astype(np.uint8)


def boundaries(labels, *, mode="thin"):
    """Pixels on the border between two segments.

    Only borders between valid segments count; the edge of the invalid (-1)
    area is not a boundary and invalid pixels are never marked.

    Parameters
    ----------
    labels : (H, W) or (Z, H, W) int ndarray
        Labels, -1 for invalid pixels.
    mode : {"thin", "thick"}, default "thin"
        "thin" marks one pixel of each pair of face-neighbours with
        different labels (the one with the lower index), giving lines one
        pixel wide; "thick" marks both.

    Returns
    -------
    mask : bool ndarray, same shape as ``labels``

    Examples
    --------
    >>> boundaries(np.array([[0, 0, 1, 1]])).astype(int)
    array([[0, 1, 0, 0]])
    """
    labels = _as_label_array(labels, "labels")
    if mode not in ("thin", "thick"):
        raise ValueError(f"mode must be 'thin' or 'thick', got {mode!r}")
    return _boundary_mask(labels, thick=mode == "thick")


def _boundary_mask(labels, *, thick, has_invalid=True):
    """Pixels whose label differs from the next one's along an axis (both valid);
    ``thick`` marks both sides.  ``has_invalid=False`` (no -1 labels) skips
    the validity test."""
    mask = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        offset = tuple(1 if d == axis else 0 for d in range(labels.ndim))
        sl_a, sl_b = _pair_slices(offset)
        a, b = labels[sl_a], labels[sl_b]
        change = a != b
        if has_invalid:
            change &= (a >= 0) & (b >= 0)
        mask[sl_a] |= change
        if thick:
            mask[sl_b] |= change
    return mask


def overlay(
    rgb,
    labels,
    *,
    alpha=0.5,
    boundaries=True,
    colors=None,
    boundary_color=(255, 255, 255),
):
    """Segment colours blended over a picture, with segment borders drawn.

    Valid pixels become ``(1 - alpha) * rgb + alpha * colors[label]``.
    Invalid pixels (label -1) get no colour: they are blended with black
    at the same ``alpha``, i.e. the picture darkened by ``1 - alpha``. With
    ``alpha=0`` and ``boundaries=False`` the picture comes back unchanged.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        The picture, e.g. from :func:`display_rgb`.
    labels : (H, W) int ndarray
        Labels ``0..K-1``, -1 for invalid pixels. For a volume pass one slice.
    alpha : float, default 0.5
        Opacity of the segment colours, in ``[0, 1]``.
    boundaries : bool, default True
        Draw one-pixel lines in ``boundary_color`` between segments (see
        :func:`boundaries`, mode "thin").
    colors : (n, 3) array of int in 0..255, optional
        Colour of each label; needs a row for every label present. Default
        :func:`segment_colors`.
    boundary_color : (int, int, int), default (255, 255, 255)
        RGB colour of the boundary lines.

    Returns
    -------
    picture : (H, W, 3) uint8 ndarray
        A new array.

    Examples
    --------
    >>> rgb = np.full((1, 2, 3), 100, dtype=np.uint8)
    >>> overlay(rgb, np.array([[0, -1]]), alpha=0.5, boundaries=False,
    ...         colors=[[200, 0, 0]])
    array([[[150,  50,  50],
            [ 50,  50,  50]]], dtype=uint8)
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise TypeError(
            f"rgb must be uint8 (use display_rgb to convert), got dtype {rgb.dtype}"
        )
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {rgb.shape}")
    labels = _as_label_array(labels, "labels", ndims=(2,))
    if labels.shape != rgb.shape[:2]:
        raise ValueError(
            f"labels must have the shape of rgb without channels {rgb.shape[:2]}, "
            f"got {labels.shape}"
        )
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    n_labels = int(labels.max()) + 1 if labels.size else 0
    colors = segment_colors(n_labels) if colors is None else _as_colors(colors, "colors")
    if colors.shape[0] < n_labels:
        raise ValueError(
            f"colors must have a row for every label (max label {n_labels - 1}), "
            f"got {colors.shape[0]} rows"
        )
    edge_color = _as_colors([boundary_color], "boundary_color")[0]

    # Row 0 (black) serves label -1, so invalid pixels are only darkened.
    # OpenCV looks the colours up and blends (rounding to nearest) several
    # times faster than float arithmetic in NumPy, block by block straight
    # into the picture, with the block's borders drawn while it is in cache.
    lut = np.zeros((max(colors.shape[0] + 1, 256), 3), dtype=np.uint8)
    lut[1:colors.shape[0] + 1] = colors
    out = np.empty(rgb.shape, dtype=np.uint8)
    has_invalid = bool(labels.size) and int(labels.min()) < 0
    blocks = list(_row_blocks(rgb.shape[0], 3 * rgb.shape[1]))
    if boundaries and blocks:
        edge = np.empty((blocks[0].stop,) + rgb.shape[1:], np.uint8)
        edge[...] = edge_color
    for rows in blocks:
        block = labels[rows]
        if len(lut) == 256:
            index = np.add(block, 1, out=np.empty(block.shape, np.uint8), casting="unsafe")
            # A colour map is a lookup from one channel to three.
            tint = cv2.applyColorMap(index, lut[:, np.newaxis])
        else:
            tint = lut[block.astype(np.intp) + 1]
        target = out[rows]
        cv2.addWeighted(np.ascontiguousarray(rgb[rows]), 1.0 - alpha, tint, alpha, 0.0,
                        dst=target)
        if boundaries:
            # The borders of these rows (with the row below the last).
            mask = _boundary_mask(labels[rows.start:rows.stop + 1], thick=False,
                                  has_invalid=has_invalid)[: rows.stop - rows.start]
            cv2.copyTo(edge[: len(mask)], mask.view(np.uint8), target)
    return out


def _as_colors(colors, name):
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f"{name} must be RGB triples of shape (n, 3), got shape {colors.shape}")
    if not (np.issubdtype(colors.dtype, np.number) and np.isrealobj(colors)):
        raise TypeError(f"{name} must be numbers in 0..255, got dtype {colors.dtype}")
    if colors.size and (not np.all(np.isfinite(colors)) or colors.min() < 0 or colors.max() > 255):
        raise ValueError(f"{name} must hold values in 0..255, got {colors.tolist()[:4]}")
    return np.rint(colors).astype(np.uint8)
