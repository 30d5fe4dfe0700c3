"""Result maps written in the input's geometry, and `describe` for ``gmmseg info``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import counted
from .image import Image
from .writers import label_dtype, write_png, write_tiff

_MEDICAL_FORMATS = ("nifti", "dicom")


def _is_medical(image: Image) -> bool:
    return image.meta.get("format") in _MEDICAL_FORMATS


def _is_raster(image: Image) -> bool:
    return image.meta.get("reader") == "rasterio" and image.ndim == 2


def result_suffix(image: Image, kind: str) -> str:
    """File suffix for a result map of `image`.

    Parameters
    ----------
    image : Image
        The segmented input.
    kind : {"labels", "float"}
        Integer label map, or float map (probabilities, log-likelihood).

    Returns
    -------
    str
        ``".nii.gz"`` for NIfTI and DICOM inputs (written with the input's
        affine), ``".tif"`` for rasters read through rasterio (a GeoTIFF with
        the input's CRS and transform); otherwise ``".png"`` for 2-D label
        maps and ``".tif"`` for volumes and float maps.

    Examples
    --------
    >>> import numpy as np
    >>> photo = Image(np.zeros((4, 5, 3), np.uint8), np.ones((4, 5), bool))
    >>> result_suffix(photo, "labels"), result_suffix(photo, "float")
    ('.png', '.tif')
    """
    if kind not in ("labels", "float"):
        raise ValueError(f"kind must be 'labels' or 'float', got {kind!r}")
    if _is_medical(image):
        return ".nii.gz"
    if _is_raster(image):
        return ".tif"
    if kind == "labels" and image.ndim == 2:
        return ".png"
    return ".tif"


def write_result_map(path: str | os.PathLike, array: np.ndarray, image: Image, *,
                     n_components: int | None = None, overwrite: bool = False) -> None:
    """Write a per-pixel result of `image` so that it lines up with the input.

    Parameters
    ----------
    path : path
        Target file; its suffix should come from `result_suffix`, and picks
        the format: ``.nii`` / ``.nii.gz`` NIfTI, ``.png`` PNG, ``.tif``
        GeoTIFF for raster inputs and plain TIFF otherwise.
    array : ndarray of shape ``image.spatial_shape`` or ``image.spatial_shape + (K,)``
        Either a label map (`n_components` given; int, 0..K-1, -1 where
        invalid) or a float map (probabilities, log-likelihood; NaN or 0
        where invalid).
    image : Image
        The segmented input, whose format and geometry the output follows.
    n_components : int, optional
        Marks `array` as a label map with this many segments. Label files
        are uint8 (uint16 when K > 255). Invalid pixels are 0 in PNG, TIFF
        and NIfTI label maps (the report's valid share and the overlay show
        where they are); GeoTIFF label maps hold the dtype's largest value
        there (255 or 65535, never a label) and declare it as nodata.
        Float GeoTIFFs are float32 with nodata NaN at invalid pixels, one
        band per channel.
    overwrite : bool, default False
        Replace an existing file; otherwise raise `OutputExistsError`.

    Notes
    -----
    NIfTI results use the input's affine and the inverse of the reader's
    axis transpose (see `gmmseg.io.medical`), so they overlay the input in
    FSLeyes or ITK-SNAP voxel for voxel. Every write is atomic.
    """
    array = np.asarray(array)
    if array.shape[: image.ndim] != image.spatial_shape or array.ndim > image.ndim + 1:
        raise ValueError(
            f"array of shape {array.shape} does not match the image's {image.spatial_shape}")
    name = Path(path).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        from .medical import write_nifti

        if n_components is not None:
            out = np.where(array >= 0, array, 0).astype(label_dtype(n_components))
        else:
            out = array.astype(np.float32, copy=False)
        write_nifti(path, out, image, n_components=n_components, overwrite=overwrite)
        return
    if _is_raster(image) and name.endswith((".tif", ".tiff")):
        from .geo import write_geotiff

        if n_components is not None:
            dtype = label_dtype(n_components)
            nodata = int(np.iinfo(dtype).max)
            out = np.where(array >= 0, array, nodata).astype(dtype)
            descriptions = ("segment label",)
        else:
            out = array.astype(np.float32, copy=True)
            invalid = ~image.valid
            out[invalid] = np.nan
            nodata = math.nan
            descriptions = (tuple(f"segment {k}" for k in range(out.shape[-1]))
                            if out.ndim == 3 else None)
        write_geotiff(path, out, image, nodata=nodata, descriptions=descriptions,
                      overwrite=overwrite)
        return
    if n_components is not None:
        array = np.where(array >= 0, array, 0).astype(label_dtype(n_components))
    if name.endswith(".png"):
        write_png(path, array, overwrite=overwrite)
    else:
        write_tiff(path, array, overwrite=overwrite)


def _number(value: float) -> str:
    return f"{value:.4g}"


def describe(image: Image) -> str:
    """One line on what the reader made of a file, for ``gmmseg info``.

    Kind and shape, channels, dtype, value range of the valid pixels,
    valid share, then the geometry (voxel spacing, or CRS and pixel size),
    nodata and the format. The file name is not included.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), np.ones((3, 4), bool),
    ...             channels=("gray",), meta={"format": "png"})
    >>> describe(img)
    'image 3 x 4, 1 channel gray, uint8, range 0..11, valid 100.0%, format png'
    """
    meta = image.meta
    n_pixels = math.prod(image.spatial_shape)
    values = image.data[image.valid] if image.n_valid else image.data.reshape(0, image.n_channels)
    value_range = f"{values.min():g}..{values.max():g}" if values.size else "-"
    kind = "volume" if image.is_volume else "image"
    parts = [
        f"{kind} {' x '.join(map(str, image.spatial_shape))}",
        f"{counted(image.n_channels, 'channel')} {','.join(image.channels) or '-'}",
        str(image.data.dtype),
        f"range {value_range}" + (f" {meta['units']}" if meta.get("units") else ""),
        f"valid {image.n_valid / max(1, n_pixels):.1%}",
    ]
    if meta.get("reader") == "rasterio":
        bands = meta.get("bands", ())
        if tuple(bands) != tuple(range(1, meta.get("count", 0) + 1)):
            parts.append(f"bands {','.join(map(str, bands))} of {meta.get('count')}")
        parts.append(f"crs {meta.get('crs_name') or 'none'}")
        if image.spacing:
            units = f" {meta['linear_units']}" if meta.get("linear_units") else ""
            parts.append(f"pixel {_number(image.spacing[1])} x {_number(image.spacing[0])}{units}")
        if meta.get("nodata") is not None:
            parts.append(f"nodata {meta['nodata']:g}")
    elif image.spacing:
        axes = "z, y, x" if image.is_volume else "y, x"
        unit = " mm" if _is_medical(image) else ""
        parts.append(f"spacing {' x '.join(_number(s) for s in image.spacing)}{unit} ({axes})")
        if meta.get("nodata") is not None:
            parts.append(f"nodata {meta['nodata']:g}")
    elif meta.get("nodata") is not None:
        parts.append(f"nodata {meta['nodata']:g}")
    if meta.get("format") == "nifti" and meta.get("n_volumes", 1) > 1:
        parts.append(f"volume {meta['volume']} of {meta['n_volumes']}")
    if meta.get("format") == "dicom":
        what = " ".join(v for v in (meta.get("modality"), meta.get("series_description")) if v)
        if what:
            parts.append(what)
    parts.append(f"format {meta.get('format', '?')}")
    return ", ".join(parts)
