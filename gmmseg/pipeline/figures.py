"""The pictures a segmentation is shown as, and the names its labels are given.

Owns what people look at: the overlay of labels on the image (for a volume,
a montage of evenly spaced slices in three planes, turned as radiologists
view it and drawn at physical size, with a legend), heat maps with their
colour bar and units, and the names and colours of the labels that the
viewers' side files carry (:func:`segment_names`).  Draws with
:mod:`gmmseg.postprocess`; writes nothing.
"""

from __future__ import annotations

import numpy as np

from .. import postprocess
from ..io import pixel_size
from ..io.medical import VIEWING_LETTERS, viewing_axes

#: Heat-map captions: what is shown and its units (``{k}``: number of segments).
UNCERTAINTY_LABEL = "normalised posterior entropy: 0 = certain, 1 = all {k} segments equally likely"
ANOMALY_LABEL = "-log p(x), nats: bright = unusual (colours span percentiles {low:g} to {high:g})"

_PLANES = ("axial", "coronal", "sagittal")
_VOXEL_AXES = ("z", "y", "x")  # image axes (slice, row, column) as NIfTI voxel coordinates


def segment_names(seg, *, invalid_as_zero=False):
    """A name for each label of ``seg``: ``"segment 0 (darkest)"`` .. ``"segment 2 (brightest)"``.

    Labels are in canonical order, sorted by the first feature's mean, so
    the ends are named after it: darkest and brightest for ``lab`` and
    ``gray``, lowest and highest ``<feature>`` otherwise.
    ``invalid_as_zero`` says that invalid pixels are stored as 0 too (NIfTI
    label maps), which label 0's name then mentions.
    """
    k = seg.n_components
    first = seg.features.names_[0] if seg.features.names_ else "feature 1"
    if seg.features.pca is not None:
        first = "PC1"
    low, high = (("darkest", "brightest") if first in ("L", "gray")
                 else (f"lowest {first}", f"highest {first}"))
    notes = [[] for _ in range(k)]
    if k > 1:
        notes[0].append(low)
        notes[-1].append(high)
    if invalid_as_zero and not bool(np.all(seg.valid)):
        notes[0].append("and invalid pixels")
    return [f"segment {j}" + (f" ({'; '.join(n)})" if n else "") for j, n in enumerate(notes)]


def _sizes_text(counts, image):
    """Share and, where the spacing says, physical size of each label: "35.0%, 94.7 mL"."""
    total = max(int(counts.sum()), 1)
    size = pixel_size(image)
    texts = []
    for n in counts:
        text = f"{100.0 * n / total:.1f}%"
        if size is not None:
            if "millilitres_per_pixel" in size:
                text += f", {postprocess.format_quantity(n * size['millilitres_per_pixel'])} mL"
            elif "hectares_per_pixel" in size:
                text += f", {postprocess.format_quantity(n * size['hectares_per_pixel'])} ha"
            else:
                text += f", {postprocess.format_quantity(n * size['per_pixel'])} {size['units']}"
        texts.append(text)
    return texts


class _View:
    """A volume turned for viewing: axis order, flips, spacing, captions and edge letters."""

    def __init__(self, image):
        axes = viewing_axes(image)
        self.known = axes is not None
        self.order, self.flip = axes if axes is not None else ((0, 1, 2), (False,) * 3)
        self.shape = tuple(image.spatial_shape[a] for a in self.order)
        spacing = image.spacing or (1.0, 1.0, 1.0)
        self.spacing = tuple(spacing[a] for a in self.order)
        self.letters = VIEWING_LETTERS if self.known else None

    def turn(self, array):
        """``array`` (volume axes first) as viewed: a view, not a copy."""
        array = np.transpose(array, self.order + tuple(range(3, array.ndim)))
        for d in range(3):
            if self.flip[d]:
                array = np.flip(array, d)
        return array

    def caption(self, axis, index):
        a = self.order[axis]
        original = self.shape[axis] - 1 - index if self.flip[axis] else index
        where = f"{_VOXEL_AXES[a]}={original}"
        return f"{_PLANES[axis]} {where}" if self.known else where


def overlay_picture(image, labels, *, alpha=0.5, boundaries=True, bands=None, colors=None,
                    names=None, slice_index=None, n_slices=postprocess.N_SLICES,
                    planes="auto", tile_size=postprocess.TILE_SIZE):
    """Labels over the image: ``(H, W, 3)`` uint8.

    A 2-D image gives :func:`gmmseg.postprocess.overlay` of its display
    stretch, at the image's size.  A volume gives, with ``slice_index``
    None, a montage (:func:`volume_montage`): evenly spaced slices in three
    planes (only the acquired plane for thin stacks) at physical size,
    with a legend of ``names`` (and each label's share and size) when
    given; with ``slice_index``, that one slice at its native size.
    """
    colors = postprocess.segment_colors(int(labels.max()) + 1) if colors is None else colors
    valid = labels >= 0
    if image.ndim == 2 or slice_index is not None:
        data = image.data
        if image.ndim == 3:
            data, labels, valid = data[slice_index], labels[slice_index], valid[slice_index]
        if _shown_as_is(data, valid, bands):
            rgb = data          # display_rgb would copy it unchanged
        else:
            rgb = postprocess.display_rgb(data, valid, bands=bands)
        return postprocess.overlay(rgb, labels, alpha=alpha, boundaries=boundaries,
                                   colors=colors)
    view = _View(image)
    data, turned, mask = view.turn(image.data), view.turn(labels), view.turn(valid)
    ranges = postprocess.display_ranges(image.data, valid, bands=bands)

    def render(axis, index, shape):
        cut = postprocess.volume_slice
        rgb = postprocess.display_rgb(cut(data, axis, index), cut(mask, axis, index),
                                      bands=bands, value_ranges=ranges)
        tile_labels = postprocess.resize_nearest(cut(turned, axis, index), shape)
        return postprocess.overlay(postprocess.resize_picture(rgb, shape), tile_labels,
                                   alpha=alpha, boundaries=boundaries, colors=colors)

    picture = volume_montage(render, view, n_slices=n_slices, planes=planes,
                             tile_size=tile_size)
    if names is None:
        return picture
    counts = postprocess.pixel_counts(labels, len(names))
    entries = [f"{name}: {sizes}" for name, sizes in zip(names, _sizes_text(counts, image))]
    key = postprocess.legend(picture.shape[1], np.asarray(colors)[:len(names)], entries,
                             scale=_key_scale(tile_size))
    return postprocess.stack(picture, key, background=(0, 0, 0))


def _shown_as_is(data, valid, bands):
    """Whether :func:`gmmseg.postprocess.display_rgb` gives ``data`` back unchanged."""
    return (data.dtype == np.uint8 and data.ndim == 3 and data.shape[-1] == 3
            and bands in (None, (0, 1, 2), [0, 1, 2]) and bool(valid.all()))


def volume_montage(render, view, *, n_slices=postprocess.N_SLICES, planes="auto",
                   tile_size=postprocess.TILE_SIZE):
    """:func:`gmmseg.postprocess.volume_montage` of a turned volume, captioned and lettered."""
    return postprocess.volume_montage(
        render, view.shape, spacing=view.spacing, n_slices=n_slices, planes=planes,
        tile_size=tile_size, caption=view.caption, letters=view.letters, reverse=view.flip)


def _key_scale(tile_size):
    """Font of a montage's legend or colour bar: a little larger than its captions."""
    return 1.25 * postprocess.caption_scale(tile_size)


def heat_picture(image, values, valid, *, value_range, cmap, label, n_slices=postprocess.N_SLICES,
                 planes="auto", tile_size=postprocess.TILE_SIZE):
    """A per-pixel map in colour with its colour bar: ``(H, W, 3)`` uint8.

    ``value_range`` maps to the colour map's ends (values outside are
    clipped); the bar under the picture gives tick values in the map's
    units and the ``label`` says what they are.  A 2-D map is drawn at its
    size (on a canvas at least :data:`gmmseg.postprocess.MIN_KEY_WIDTH`
    wide), a volume as the same montage as its overlay.
    """
    if values.ndim == 2:
        picture = postprocess.heat_map(values, valid, value_range=value_range, cmap=cmap)
        width = max(picture.shape[1], postprocess.MIN_KEY_WIDTH)
        bar = postprocess.colorbar(width, value_range, cmap=cmap, label=label)
        return postprocess.stack(picture, bar)
    view = _View(image)
    turned, mask = view.turn(values), view.turn(valid)

    def render(axis, index, shape):
        cut = postprocess.volume_slice
        tile = postprocess.heat_map(cut(turned, axis, index), cut(mask, axis, index),
                                    value_range=value_range, cmap=cmap)
        return postprocess.resize_nearest(tile, shape)

    picture = volume_montage(render, view, n_slices=n_slices, planes=planes,
                             tile_size=tile_size)
    width = min(picture.shape[1], max(postprocess.MIN_KEY_WIDTH, 3 * tile_size))
    bar = postprocess.colorbar(width, value_range, cmap=cmap, label=label,
                               background=(0, 0, 0), color=(230, 230, 230),
                               scale=_key_scale(tile_size))
    return postprocess.stack(picture, bar, background=(0, 0, 0))
