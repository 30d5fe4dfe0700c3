"""GeoTIFF and other GDAL rasters through rasterio: N bands, nodata, CRS and transform.

Needs the ``geo`` extra (rasterio); without it the reader fails with a
one-line error that gives the install command.

A raster of B bands, H rows and W columns becomes an ``(H, W, C)`` `Image`
(C = B, or the chosen ``bands``) in the file's dtype. A pixel is valid when
at least one chosen band holds data there (GDAL's rule for a dataset mask:
nodata, per-dataset masks and alpha bands count) and no chosen band is NaN.
Results are written back as GeoTIFF with the input's CRS, transform (or
GCPs), size and a nodata value at every invalid pixel, so they overlay the
input in QGIS or any GIS.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from ..errors import GmmsegError, ImageReadError, counted, one_line
from .image import _RGB, Image, _check_pixels, logged_warnings, require
from .writers import atomic_output

logger = logging.getLogger("gmmseg.io")


def _band_names(ds, indexes: tuple[int, ...]) -> tuple[str, ...]:
    colours = [ds.colorinterp[i - 1].name for i in indexes]
    if colours == ["red", "green", "blue"]:
        return _RGB
    return tuple(f"band{i}" for i in indexes)


def _valid_mask(rasterio, ds, data: np.ndarray, indexes: tuple[int, ...],
                nodata: float | None) -> np.ndarray:
    """Pixels where at least one band holds data and no band is NaN, ``(H, W)`` bool."""
    flags = rasterio.enums.MaskFlags
    valid = np.zeros(data.shape[1:], dtype=bool)
    finite = np.ones(data.shape[1:], dtype=bool)
    for c, index in enumerate(indexes):
        band = data[c]
        band_flags = ds.mask_flag_enums[index - 1]
        if nodata is None:
            band_valid = (np.ones(band.shape, dtype=bool) if band_flags == [flags.all_valid]
                          else ds.read_masks(index) != 0)
        else:
            band_valid = ~np.isnan(band) if math.isnan(nodata) else band != nodata
            if flags.per_dataset in band_flags or flags.alpha in band_flags:
                band_valid &= ds.read_masks(index) != 0
        valid |= band_valid
        if band.dtype.kind == "f":
            finite &= np.isfinite(band)
    return valid & finite


def _nodata_text(values: tuple) -> str:
    distinct = sorted({v for v in values if v is not None}, key=str)
    if not distinct:
        return "none set"
    return ", ".join(f"{v:g}" for v in distinct)


def read_raster(path: Path, *, max_pixels: int, bands: tuple[int, ...] | None = None,
                nodata: float | None = None) -> Image:
    """Read a GeoTIFF (or any raster GDAL reads) into an ``(H, W, C)`` `Image`.

    Parameters
    ----------
    path : Path
    max_pixels : int
        Largest ``H * W`` to read, checked from the header.
    bands : tuple of int, optional
        1-based band numbers to read, in this order (GDAL's numbering, as in
        ``--bands 4,3,2``); default: every band that is not alpha.
    nodata : float, optional
        Value that marks missing data in every band, replacing the file's.

    Returns
    -------
    Image
        ``meta`` holds ``crs`` (WKT, or None), ``crs_name`` (e.g.
        ``"EPSG:32618"``), ``transform`` (an ``affine.Affine``), ``gcps``,
        ``nodata`` (the value used, None if none), ``nodatavals`` (per band),
        ``dtype``, ``bands``, ``count``, ``descriptions``, ``driver`` and
        ``linear_units``. ``spacing`` is the pixel size ``(y, x)`` in CRS
        units for georeferenced rasters.
    """
    rasterio = require("rasterio", what="reading GeoTIFF / raster files", path=path)
    try:
        with logged_warnings(path), rasterio.open(path) as ds:
            count = ds.count
            if count == 0:
                raise ImageReadError(f"{path}: raster has no bands")
            if bands is None:
                alpha = rasterio.enums.ColorInterp.alpha
                indexes = tuple(i for i in range(1, count + 1) if ds.colorinterp[i - 1] != alpha)
                indexes = indexes or tuple(range(1, count + 1))
            else:
                wrong = [b for b in bands if not 1 <= b <= count]
                if wrong:
                    raise ImageReadError(
                        f"{path}: band {wrong[0]} does not exist; the file has {counted(count, 'band')}, "
                        f"numbered 1 to {count}")
                indexes = tuple(bands)
            _check_pixels(path, (ds.height, ds.width), max_pixels)
            dtypes = [np.dtype(ds.dtypes[i - 1]) for i in indexes]
            if any(d.kind not in "biuf" for d in dtypes):
                raise ImageReadError(f"{path}: band data type {ds.dtypes[indexes[0] - 1]} is not "
                                     "supported (gmmseg reads integer and float bands)")
            dtype = np.result_type(*dtypes)
            data = ds.read(list(indexes), out_dtype=dtype)
            valid = _valid_mask(rasterio, ds, data, indexes, nodata)
            nodatavals = tuple(ds.nodatavals[i - 1] for i in indexes)
            used_nodata = nodata if nodata is not None else next(
                (v for v in nodatavals if v is not None), None)
            georeferenced = ds.crs is not None or not ds.transform.is_identity
            transform = ds.transform
            crs = ds.crs
            gcps, gcp_crs = ds.gcps
            meta = {
                "format": "geotiff" if ds.driver == "GTiff" else ds.driver.lower(),
                "reader": "rasterio",
                "driver": ds.driver,
                "crs": crs.to_wkt() if crs else None,
                "crs_name": crs.to_string() if crs else None,
                "linear_units": crs.linear_units if crs and crs.is_projected else None,
                "transform": transform,
                "gcps": (list(gcps), gcp_crs.to_wkt() if gcp_crs else None) if gcps else None,
                "nodata": used_nodata,
                "nodatavals": nodatavals,
                "dtype": str(dtype),
                "bands": indexes,
                "count": count,
                "descriptions": tuple(ds.descriptions[i - 1] or "" for i in indexes),
                "width": ds.width,
                "height": ds.height,
            }
            channels = _band_names(ds, indexes)
    except (ImageReadError, MemoryError):
        raise
    except Exception as err:
        # rasterio puts GDAL's own message on the exception it chains from.
        detail = one_line(err, with_type=True) if err.__cause__ is None else (
            f"{one_line(err, with_type=True)}; {one_line(err.__cause__, with_type=True)}")
        raise ImageReadError(f"{path}: truncated, corrupt or unsupported raster file "
                             f"({detail})") from err
    if not valid.any():
        shown = _nodata_text((nodata,) if nodata is not None else nodatavals)
        raise ImageReadError(f"{path}: no valid pixels: every pixel is nodata or masked "
                             f"(nodata={shown})")
    spacing = None
    if georeferenced and not transform.is_identity:
        a, b, _, d, e, _ = transform[:6]
        spacing = (math.hypot(b, e), math.hypot(a, d))
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            spacing = None
    return Image(data=np.ascontiguousarray(np.moveaxis(data, 0, -1)), valid=valid, path=path,
                 spacing=spacing, channels=channels, meta=meta)


def write_geotiff(path: str | os.PathLike, array: np.ndarray, image: Image, *,
                  nodata: float, descriptions: tuple[str, ...] | None = None,
                  overwrite: bool = False) -> None:
    """Write ``(H, W)`` or ``(H, W, K)`` `array` as a GeoTIFF in `image`'s geometry, atomically.

    The file gets the input's CRS and transform (or GCPs), one band per
    channel, deflate compression and `nodata` as its nodata value; `array`
    must already hold `nodata` at invalid pixels and the dtype to store.
    """
    rasterio = require("rasterio", what="writing GeoTIFF", path=path, error=GmmsegError)
    bands = array[np.newaxis] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    meta = image.meta
    profile = {
        "driver": "GTiff",
        "width": bands.shape[2],
        "height": bands.shape[1],
        "count": bands.shape[0],
        "dtype": bands.dtype.name,
        "nodata": nodata,
        "compress": "deflate",
    }
    if meta.get("crs") is not None:
        profile["crs"] = meta["crs"]
    if meta.get("transform") is not None and not meta["transform"].is_identity:
        profile["transform"] = meta["transform"]
    elif meta.get("gcps"):
        gcps, gcp_crs = meta["gcps"]
        profile["gcps"] = gcps
        profile["crs"] = gcp_crs
    with atomic_output(path, overwrite=overwrite) as tmp:
        # No .aux.xml side files next to the temporary name.
        with logged_warnings(Path(path)), rasterio.Env(GDAL_PAM_ENABLED="NO"):
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(np.ascontiguousarray(bands))
                for i, text in enumerate(descriptions or (), start=1):
                    dst.set_band_description(i, text)
