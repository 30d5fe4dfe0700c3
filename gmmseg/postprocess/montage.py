"""Volumes as pictures: evenly spaced slices in three planes, drawn at their physical size.

Owns the layout of a volume montage: which slices (:func:`montage_slices`),
how large each tile is drawn so that a millimetre is equally long in every
tile and in both directions whatever the voxel spacing
(:func:`volume_montage`), the captions and the orientation letters at the
tiles' edges.  What a tile shows (an overlay, a heat map) is the caller's
``render`` function; :func:`volume_slice`, :func:`resize_nearest` and
:func:`resize_picture` are the pieces such a function is made of.
"""

import numbers

import cv2
import numpy as np

from ._arrays import _as_int
from .annotate import draw_text, text_size

#: Slices shown per plane.
N_SLICES = 6

#: Longest side of a tile in pixels (the physical extent of the largest plane shown).
TILE_SIZE = 256

#: An axis with fewer voxels than this is too thin to cut across: a montage
#: of such a volume shows only the plane across that axis (the acquired slices).
MIN_THREE_PLANES = 8

_GAP = 4


def montage_slices(shape, *, n_slices=N_SLICES, planes="auto"):
    """The slices a montage of a volume of ``shape`` shows, plane by plane.

    Parameters
    ----------
    shape : (int, int, int)
        Spatial shape of the volume.
    n_slices : int, default 6
        Slices per plane, evenly spaced and away from the ends (fewer when
        the volume is thinner).
    planes : "auto", "all", int or sequence of int
        Axes held fixed, one row of tiles each.  "auto": all three, unless
        an axis has fewer than :data:`MIN_THREE_PLANES` voxels: then only
        the thinnest axis (its slices are the picture; planes along it would
        be a few voxels high).

    Returns
    -------
    list of (int, list of int)
        ``(axis, indices)`` per row.

    Examples
    --------
    >>> montage_slices((2, 256, 256))
    [(0, [0, 1])]
    >>> montage_slices((25, 41, 33), n_slices=3)
    [(0, [6, 12, 18]), (1, [10, 20, 30]), (2, [8, 16, 24])]
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes, got {shape}")
    n_slices = _as_int(n_slices, "n_slices", minimum=1)
    if isinstance(planes, str):
        if planes == "all":
            axes = [0, 1, 2]
        elif planes == "auto":
            thin = int(np.argmin(shape))
            axes = [thin] if shape[thin] < MIN_THREE_PLANES else [0, 1, 2]
        else:
            raise ValueError(f"planes must be 'auto', 'all' or axes 0..2, got {planes!r}")
    else:
        axes = [planes] if isinstance(planes, numbers.Integral) else list(planes)
        if not axes or any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes):
            raise ValueError(f"planes must be 'auto', 'all' or axes 0..2, got {planes!r}")
    out = []
    for axis in axes:
        size = shape[axis]
        at = np.linspace(0.0, size - 1.0, n_slices + 2)[1:-1] if size > n_slices else (
            np.arange(size, dtype=float))
        out.append((int(axis), sorted({round(float(v)) for v in at})))
    return out


def volume_slice(volume, axis, index):
    """The plane of ``volume`` at ``index`` along ``axis``: rows and columns are the other axes.

    A view, not a copy; trailing (channel) axes are kept.
    """
    return volume[(slice(None),) * axis + (index,)]


def resize_nearest(array, shape):
    """``array`` resampled to ``shape`` (rows, columns), nearest neighbour: labels stay labels."""
    h, w = shape
    rows = np.minimum(((np.arange(h) + 0.5) * array.shape[0] / h).astype(np.intp),
                      array.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * array.shape[1] / w).astype(np.intp),
                      array.shape[1] - 1)
    return array[rows[:, np.newaxis], cols]


def resize_picture(rgb, shape):
    """An RGB picture resampled to ``shape``: bilinear when enlarged, pixel areas when shrunk."""
    h, w = shape
    if (h, w) == rgb.shape[:2]:
        return rgb
    shrink = h < rgb.shape[0] or w < rgb.shape[1]
    return cv2.resize(np.ascontiguousarray(rgb), (w, h),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _tile_shapes(shape, spacing, rows, tile_size):
    """Pixel size ``(h, w)`` of the tiles of each row: one scale (pixels per mm) for all."""
    extent = [n * s for n, s in zip(shape, spacing)]
    in_plane = {axis: [a for a in range(3) if a != axis] for axis, _ in rows}
    largest = max(max(extent[a] for a in axes) for axes in in_plane.values())
    scale = tile_size / largest
    return {axis: tuple(max(1, round(extent[a] * scale)) for a in axes)
            for axis, axes in in_plane.items()}


def caption_scale(tile_size=TILE_SIZE):
    """Font scale of the captions of a montage with tiles of ``tile_size`` pixels."""
    return float(np.clip(tile_size / 560.0, 0.4, 2.0))


def volume_montage(render, shape, *, spacing=None, n_slices=N_SLICES, planes="auto",
                   tile_size=TILE_SIZE, caption=None, letters=None, reverse=None,
                   background=(0, 0, 0), color=(230, 230, 230)):
    """Evenly spaced slices of a volume in a grid, one row per plane, at physical size.

    Every tile is drawn at one scale in pixels per unit of ``spacing``, in
    both directions, so anisotropic voxels do not look squashed and the
    planes compare by size; the largest plane shown is ``tile_size`` pixels
    on its longer side.  A tile's rows and columns are the volume's other
    two axes in order (row 0 at the top).

    Parameters
    ----------
    render : callable ``(axis, index, (h, w)) -> (h, w, 3) uint8``
        Draws the plane at ``index`` along ``axis`` at that size.
    shape : (int, int, int)
        Spatial shape of the volume.
    spacing : (float, float, float), optional
        Voxel size along each axis; default 1.
    n_slices, planes
        See :func:`montage_slices`.
    tile_size : int, default 256
    caption : callable ``(axis, index) -> str``, optional
        Text above each tile; default ``"axis {axis}: {index}"``.
    letters : three (str, str), optional
        Per axis, where its first and its last index lie (e.g. ``("S",
        "I")``); written at the tiles' edges.
    reverse : three bool, optional
        Per axis, show its slices from the last to the first (e.g. so that
        they run in the file's own index order when the axis was flipped
        for viewing).
    background, color : (int, int, int)
        RGB of the canvas and of the text.

    Returns
    -------
    picture : (H, W, 3) uint8 ndarray
    """
    rows = montage_slices(shape, n_slices=n_slices, planes=planes)
    spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers, got {spacing}")
    tile_size = _as_int(tile_size, "tile_size", minimum=16)
    if caption is None:
        def caption(axis, index):
            return f"axis {axis}: {index}"
    if reverse is not None:
        rows = [(axis, indices[::-1] if reverse[axis] else indices) for axis, indices in rows]
    shapes = _tile_shapes(shape, spacing, rows, tile_size)
    scale = caption_scale(tile_size)
    _, text_h, text_base = text_size("Ag", scale)
    band = text_h + text_base + 2 * _GAP
    widths = [sum(shapes[axis][1] for _ in indices) + _GAP * (len(indices) + 1)
              for axis, indices in rows]
    height = sum(band + shapes[axis][0] + _GAP for axis, _ in rows) + _GAP
    canvas = np.empty((height, max(widths), 3), dtype=np.uint8)
    canvas[:] = background
    top = _GAP
    for axis, indices in rows:
        h, w = shapes[axis]
        x = _GAP
        for index in indices:
            tile = np.asarray(render(axis, index, (h, w)))
            if tile.shape != (h, w, 3) or tile.dtype != np.uint8:
                raise ValueError(f"render must return a ({h}, {w}, 3) uint8 picture, "
                                 f"got {tile.shape} {tile.dtype}")
            canvas[top + band:top + band + h, x:x + w] = tile
            draw_text(canvas, caption(axis, index), (x, top + _GAP + text_h), scale, color)
            if letters is not None:
                _orientation_letters(canvas, letters, axis, (top + band, x, h, w), scale)
            x += w + _GAP
        top += band + h + _GAP
    return canvas


def _orientation_letters(canvas, letters, axis, box, scale):
    """Write where each tile edge lies (e.g. R / L, A / P) inside the tile, outlined."""
    top, left, h, w = box
    row_axis, col_axis = (a for a in range(3) if a != axis)
    _, text_h, _ = text_size("A", scale)
    inset = max(2, text_h // 3)
    spots = [
        (letters[row_axis][0], (left + w / 2, top + inset + text_h), "center"),
        (letters[row_axis][1], (left + w / 2, top + h - inset), "center"),
        (letters[col_axis][0], (left + inset, top + (h + text_h) / 2), "left"),
        (letters[col_axis][1], (left + w - inset, top + (h + text_h) / 2), "right"),
    ]
    for text, org, align in spots:
        draw_text(canvas, text, org, scale * 1.15, (0, 0, 0), align=align, outline=True)
        draw_text(canvas, text, org, scale * 1.15, (255, 220, 60), align=align)
