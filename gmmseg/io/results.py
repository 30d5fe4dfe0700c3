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
                     n_components: int | None = None, colors: np.ndarray | None = None,
                     overwrite: bool = False) -> None:
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
    colors : (n_components, 3) array of int in 0..255, optional
        Colour of each label, as in the overlay: GeoTIFF label maps get it
        as their colour table (QGIS shows them in these colours; the
        nodata value is transparent).  Other formats store no colours
        (see `write_label_table`).
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
            if colors is not None and len(colors) < n_components:
                raise ValueError(f"colors must have a row per label ({n_components}), "
                                 f"got {len(colors)}")
        else:
            out = array.astype(np.float32, copy=True)
            invalid = ~image.valid
            out[invalid] = np.nan
            nodata = math.nan
            descriptions = (tuple(f"segment {k}" for k in range(out.shape[-1]))
                            if out.ndim == 3 else None)
            colors = None
        write_geotiff(path, out, image, nodata=nodata, descriptions=descriptions,
                      colors=colors, overwrite=overwrite)
        return
    if n_components is not None:
        # Labels 0..K-1 fit the label dtype; -1 wraps, and is set to 0 after.
        labels, array = array, array.astype(label_dtype(n_components))
        if labels.size and labels.min() < 0:
            np.copyto(array, 0, where=labels < 0)
    if name.endswith(".png"):
        write_png(path, array, overwrite=overwrite)
    else:
        write_tiff(path, array, overwrite=overwrite)


def label_table_suffixes(image: Image) -> tuple[str, ...]:
    """Suffixes (after the label map's stem) of the files that name and colour its labels.

    ``(".txt", ".lut")`` for NIfTI and DICOM inputs (an ITK-SNAP label
    description and an FSLeyes lookup table beside ``_labels.nii.gz``),
    ``(".tif.aux.xml",)`` for rasters (GDAL's side file with category names
    and a raster attribute table beside ``_labels.tif``), none otherwise.
    """
    if _is_medical(image):
        return (".txt", ".lut")
    if _is_raster(image):
        return (".tif.aux.xml",)
    return ()


def write_label_table(path: str | os.PathLike, names, colors, *, columns=None,
                      overwrite: bool = False) -> None:
    """Write a file that names and colours label values, in the format its suffix says.

    Parameters
    ----------
    path : path
        ``.txt``: ITK-SNAP label description; ``.lut``: FSLeyes lookup
        table; ``.aux.xml``: GDAL side file of a label GeoTIFF (category
        names and raster attribute table, which QGIS reads).
    names : sequence of K str
        Name of label ``0 .. K-1``.
    colors : (K, 3) array of int in 0..255
        Colour of each label, as in the overlay.
    columns : dict of str to sequence of K numbers, optional
        More columns of the GDAL raster attribute table (ignored otherwise).
    overwrite : bool, default False
    """
    name = Path(path).name.lower()
    if name.endswith(".aux.xml"):
        from .geo import write_category_names

        write_category_names(path, names, colors, columns=columns, overwrite=overwrite)
    elif name.endswith(".txt"):
        from .medical import write_itksnap_labels

        write_itksnap_labels(path, colors, names, overwrite=overwrite)
    elif name.endswith(".lut"):
        from .medical import write_fsleyes_lut

        write_fsleyes_lut(path, colors, names, overwrite=overwrite)
    else:
        raise ValueError(f"{path}: label tables are .txt, .lut or .aux.xml files")


_UNIT_SYMBOLS = {"metre": "m", "meter": "m", "kilometre": "km", "kilometer": "km",
                 "foot": "ft", "US survey foot": "ftUS", "degree": "degree"}

# NIfTI spatial units to millimetres; "unknown" is read as mm, as FSL does.
_NIFTI_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}


def pixel_size(image: Image) -> dict | None:
    """The physical area of a pixel (2-D) or volume of a voxel (3-D), where it is known.

    Returns
    -------
    dict or None
        ``{"measure": "area" or "volume", "units": str, "per_pixel": float}``
        and, where they apply, ``"hectares_per_pixel"`` or
        ``"millilitres_per_pixel"``:

        - rasters with a CRS: the area of the pixel parallelogram (the
          transform's determinant) in the CRS's units squared (``"m^2"``,
          ``"ftUS^2"``, ``"degree^2"`` for geographic CRSs), with hectares
          for projected CRSs;
        - NIfTI and DICOM: ``"mm^3"`` and millilitres for volumes (NIfTI
          voxel sizes converted from the header's units; unknown units
          are read as mm), ``"mm^2"`` for single slices;
        - None for photos, arrays and rasters without a CRS.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Image(np.zeros((2, 3, 4, 1), np.int16), np.ones((2, 3, 4), bool),
    ...             spacing=(2.5, 1.0, 1.0), meta={"format": "nifti"})
    >>> pixel_size(vol)
    {'measure': 'volume', 'units': 'mm^3', 'per_pixel': 2.5, 'millilitres_per_pixel': 0.0025}
    """
    meta = image.meta
    if _is_raster(image):
        transform, wkt = meta.get("transform"), meta.get("crs")
        if transform is None or transform.is_identity or not wkt:
            return None
        a, b, _, d, e, _ = transform[:6]
        area = abs(a * e - b * d)
        from rasterio.crs import CRS

        crs = CRS.from_wkt(wkt)
        if crs.is_projected:
            unit, factor = crs.linear_units_factor
            out = {"measure": "area", "units": f"{_UNIT_SYMBOLS.get(unit, unit)}^2",
                   "per_pixel": area, "hectares_per_pixel": area * factor**2 / 1e4}
        else:
            unit = crs.units_factor[0] if crs.is_geographic else "unknown"
            out = {"measure": "area", "units": f"{_UNIT_SYMBOLS.get(unit, unit)}^2",
                   "per_pixel": area}
        return out
    if not _is_medical(image) or not image.spacing:
        return None
    units = meta.get("xyzt_units", ("mm",))[0] if meta.get("format") == "nifti" else "mm"
    to_mm = _NIFTI_MM.get(units, 1.0)
    size = math.prod(s * to_mm for s in image.spacing)
    if image.ndim == 3:
        return {"measure": "volume", "units": "mm^3", "per_pixel": size,
                "millilitres_per_pixel": size / 1000.0}
    return {"measure": "area", "units": "mm^2", "per_pixel": size}


def _number(value: float) -> str:
    return f"{value:.4g}"


def _sizes(values) -> str:
    return " x ".join(_number(v) for v in values)


def describe(image: Image) -> str:
    """One line on what the reader made of a file, for ``gmmseg info``.

    Size with its axes named in the order the format's own tools print them
    (NIfTI: x, y, z as fslinfo and nibabel; rasters: width x height as
    gdalinfo's "Size is W, H"; DICOM: rows x columns x slices, as its Rows
    and Columns attributes; other images: width x height; arrays: numpy's
    order), then the pixel or voxel size in the same order, channels,
    dtype, value range of the valid pixels, valid share, the CRS or
    modality, nodata and the format.  The file name is not included.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), np.ones((3, 4), bool),
    ...             channels=("gray",), meta={"format": "png"})
    >>> describe(img).split(", ")[:3]
    ['image 4 x 3 pixels (width x height)', '1 channel gray', 'uint8']
    """
    meta = image.meta
    n_pixels = math.prod(image.spatial_shape)
    values = image.data[image.valid] if image.n_valid else image.data.reshape(0, image.n_channels)
    value_range = f"{values.min():g}..{values.max():g}" if values.size else "-"
    parts = [_geometry_text(image)]
    parts += [
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
    if meta.get("nodata") is not None:
        parts.append(f"nodata {meta['nodata']:g}")
    if meta.get("format") == "nifti" and meta.get("n_volumes", 1) > 1:
        parts.append(f"volume {meta['volume']} of {meta['n_volumes']}")
    if meta.get("format") == "dicom":
        what = " ".join(v for v in (meta.get("modality"), meta.get("series_description")) if v)
        if what:
            parts.append(what)
    parts.append(f"format {meta.get('format', '?')}")
    return ", ".join(parts)


def _geometry_text(image: Image) -> str:
    """Size and pixel size with their axes named as the format's own tools name them."""
    meta, shape, spacing = image.meta, image.spatial_shape, image.spacing
    kind = "volume" if image.is_volume else "image"
    if meta.get("reader") == "rasterio":  # gdalinfo: "Size is W, H", "Pixel Size = (x, y)"
        text = f"raster {shape[1]} x {shape[0]} pixels (width x height)"
        if spacing:
            units = f" {meta['linear_units']}" if meta.get("linear_units") else ""
            text += f", pixel size {_sizes(spacing[::-1])}{units} (x, y)"
        return text
    if meta.get("format") == "nifti":  # fslinfo dim1..3 and nibabel's shape: x, y, z
        axes = "x, y, z" if image.is_volume else "x, y"
        text = f"{kind} {' x '.join(map(str, shape[::-1]))} voxels ({axes})"
        if spacing:
            unit = meta.get("xyzt_units", ("mm",))[0]
            text += f", {_sizes(spacing[::-1])} {'mm' if unit == 'unknown' else unit}"
        return text
    if meta.get("format") == "dicom":  # Rows, Columns; PixelSpacing is (row, column) spacing
        if image.is_volume:
            text = f"volume {shape[1]} x {shape[2]} x {shape[0]} (rows x columns x slices)"
            if spacing:
                text += (f", pixel spacing {_sizes(spacing[1:])} mm (rows, columns), slices "
                         f"{_number(spacing[0])} mm apart")
            return text
        text = f"image {shape[0]} x {shape[1]} (rows x columns)"
        return text + (f", pixel spacing {_sizes(spacing)} mm (rows, columns)" if spacing else "")
    if meta.get("format") in (None, "npy", "ndarray"):  # arrays: numpy's own order
        axes = "z, y, x" if image.is_volume else "rows x columns"
        if image.is_volume:
            text = f"volume {' x '.join(map(str, shape))} ({axes})"
        else:
            text = f"image {shape[0]} x {shape[1]} ({axes})"
        return text + (f", spacing {_sizes(spacing)} ({'z, y, x' if image.is_volume else 'y, x'})"
                       if spacing else "")
    if image.is_volume:  # multi-page TIFF stacks: pages of width x height
        return f"volume {shape[2]} x {shape[1]} x {shape[0]} (width x height x pages)"
    return f"image {shape[1]} x {shape[0]} pixels (width x height)"
