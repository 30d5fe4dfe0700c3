"""Masks: which pixels of an image to segment, from an array, a file or a rule.

:func:`resolve_mask` turns what a user gives as ``mask=`` into a bool array
on the image's grid: a bool array, a file (NIfTI, DICOM, any raster or
picture gmmseg reads: non-zero pixels are in) whose grid must match the
image's, or ``"nonzero"`` (the pixels where some channel is not 0, which
leaves out the zero background of a skull-stripped scan).  Errors name the
file and the problem in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ImageReadError

#: Rules accepted as ``mask=``.
MASK_RULES = ("nonzero",)


def resolve_mask(mask, image):
    """``mask`` as a bool array of ``image.spatial_shape`` (None stays None).

    Parameters
    ----------
    mask : None, bool ndarray, path or "nonzero"
        A file is read with :func:`gmmseg.read_image`; its non-zero pixels
        (in any channel) are in the mask.  For volumes and georeferenced
        rasters with geometry, the mask's grid must match the image's
        (shape, and the NIfTI/DICOM affine within 1e-3 mm).
    image : Image

    Returns
    -------
    bool ndarray or None

    Examples
    --------
    >>> from gmmseg.io import Image
    >>> img = Image(np.array([[[0], [3]]], np.uint8), np.ones((1, 2), bool))
    >>> resolve_mask("nonzero", img).tolist()
    [[False, True]]
    """
    if mask is None:
        return None
    if isinstance(mask, str) and mask in MASK_RULES:
        return np.any(image.data != 0, axis=-1)
    if isinstance(mask, (str, os.PathLike)):
        return _mask_file(Path(mask), image)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != image.spatial_shape:
        raise ValueError(
            f"mask must be a bool array of shape {image.spatial_shape}, a file or one of "
            f"{', '.join(repr(r) for r in MASK_RULES)}, got {mask.dtype} {mask.shape}")
    return mask


def _mask_file(path, image):
    from .read import read_image

    if not path.exists():
        raise ImageReadError(f"{path}: mask file not found (mask= takes a bool array, a file "
                             f"or one of {', '.join(repr(r) for r in MASK_RULES)})")
    try:
        source = read_image(path)
    except ImageReadError:
        raise
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read the mask ({err})") from err
    where = f" of {image.path}" if image.path else ""
    if source.spatial_shape != image.spatial_shape:
        raise ImageReadError(
            f"{path}: mask has shape {source.spatial_shape}, the image{where} has "
            f"{image.spatial_shape}; give a mask on the image's grid")
    ours, theirs = image.meta.get("affine"), source.meta.get("affine")
    if ours is not None and theirs is not None and not np.allclose(
            np.asarray(ours, float), np.asarray(theirs, float), atol=1e-3):
        raise ImageReadError(
            f"{path}: the mask's voxel-to-world affine differs from the image's{where}; "
            "give a mask on the image's grid")
    inside = np.any(source.data != 0, axis=-1) & source.valid
    if not inside.any():
        raise ImageReadError(f"{path}: the mask is empty (no non-zero pixel)")
    return inside
