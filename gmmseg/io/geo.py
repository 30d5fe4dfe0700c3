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
                nodata: float | None, window=None) -> np.ndarray:
    """Pixels where at least one band holds data and no band is NaN, ``(H, W)`` bool.

    ``data`` is the ``window`` (a rasterio ``Window``; None: the whole raster) of the bands.
    """
    flags = rasterio.enums.MaskFlags
    valid = np.zeros(data.shape[1:], dtype=bool)
    finite = np.ones(data.shape[1:], dtype=bool)
    for c, index in enumerate(indexes):
        band = data[c]
        band_flags = ds.mask_flag_enums[index - 1]
        file_nodata = ds.nodatavals[index - 1]
        if nodata is None and band_flags == [flags.nodata] and _exact(band, file_nodata):
            # GDAL's nodata mask of an integer band is exactly this comparison,
            # without reading the band a second time.
            band_valid = band != file_nodata
        elif nodata is None:
            band_valid = (np.ones(band.shape, dtype=bool) if band_flags == [flags.all_valid]
                          else ds.read_masks(index, window=window) != 0)
        else:
            band_valid = ~np.isnan(band) if math.isnan(nodata) else band != nodata
            if flags.per_dataset in band_flags or flags.alpha in band_flags:
                band_valid &= ds.read_masks(index, window=window) != 0
        valid |= band_valid
        if band.dtype.kind == "f":
            finite &= np.isfinite(band)
    return valid & finite


def _exact(band: np.ndarray, value) -> bool:
    """Whether ``value`` is an integer nodata value that ``band`` (an integer array) can hold."""
    if band.dtype.kind not in "iu" or value is None or not float(value).is_integer():
        return False
    info = np.iinfo(band.dtype)
    return info.min <= value <= info.max


def _nodata_text(values: tuple) -> str:
    distinct = sorted({v for v in values if v is not None}, key=str)
    if not distinct:
        return "none set"
    return ", ".join(f"{v:g}" for v in distinct)


def band_selection(rasterio, ds, path: Path, bands: tuple[int, ...] | None
                   ) -> tuple[tuple[int, ...], np.dtype]:
    """The 1-based band numbers to read (default: all but alpha) and their common dtype."""
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
    dtypes = [np.dtype(ds.dtypes[i - 1]) for i in indexes]
    if any(d.kind not in "biuf" for d in dtypes):
        raise ImageReadError(f"{path}: band data type {ds.dtypes[indexes[0] - 1]} is not "
                             "supported (gmmseg reads integer and float bands)")
    return indexes, np.result_type(*dtypes)


def raster_description(ds, indexes: tuple[int, ...], dtype: np.dtype,
                       nodata: float | None) -> tuple[dict, tuple[float, float] | None, tuple]:
    """``(meta, spacing, channels)`` of an open rasterio dataset's chosen bands, as `read_raster` gives them."""
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
        "count": ds.count,
        "descriptions": tuple(ds.descriptions[i - 1] or "" for i in indexes),
        "width": ds.width,
        "height": ds.height,
    }
    spacing = None
    if georeferenced and not transform.is_identity:
        a, b, _, d, e, _ = transform[:6]
        spacing = (math.hypot(b, e), math.hypot(a, d))
        if not all(math.isfinite(v) and v > 0 for v in spacing):
            spacing = None
    return meta, spacing, _band_names(ds, indexes)


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
            indexes, dtype = band_selection(rasterio, ds, path, bands)
            _check_pixels(path, (ds.height, ds.width), max_pixels)
            data = ds.read(list(indexes), out_dtype=dtype)
            valid = _valid_mask(rasterio, ds, data, indexes, nodata)
            meta, spacing, channels = raster_description(ds, indexes, dtype, nodata)
    except (ImageReadError, MemoryError):
        raise
    except Exception as err:
        # rasterio puts GDAL's own message on the exception it chains from.
        detail = one_line(err, with_type=True) if err.__cause__ is None else (
            f"{one_line(err, with_type=True)}; {one_line(err.__cause__, with_type=True)}")
        raise ImageReadError(f"{path}: truncated, corrupt or unsupported raster file "
                             f"({detail})") from err
    if not valid.any():
        shown = _nodata_text((nodata,) if nodata is not None else meta["nodatavals"])
        raise ImageReadError(f"{path}: no valid pixels: every pixel is nodata or masked "
                             f"(nodata={shown})")
    return Image(data=np.ascontiguousarray(np.moveaxis(data, 0, -1)), valid=valid, path=path,
                 spacing=spacing, channels=channels, meta=meta)


def write_geotiff(path: str | os.PathLike, array: np.ndarray, image: Image, *,
                  nodata: float, descriptions: tuple[str, ...] | None = None,
                  colors: np.ndarray | None = None, overwrite: bool = False) -> None:
    """Write ``(H, W)`` or ``(H, W, K)`` `array` as a GeoTIFF in `image`'s geometry, atomically.

    The file gets the input's CRS and transform (or GCPs), one band per
    channel, deflate compression and `nodata` as its nodata value; `array`
    must already hold `nodata` at invalid pixels and the dtype to store.
    `colors` (``(n, 3)`` RGB, one row per value 0..n-1) gives a one-band
    uint8 / uint16 map a colour table (a paletted GeoTIFF, which QGIS shows
    in these colours; the nodata value is transparent).
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
                if colors is not None:
                    table = {k: (*(int(c) for c in rgb), 255) for k, rgb in enumerate(colors)}
                    table[int(nodata)] = (0, 0, 0, 0)
                    dst.write_colormap(1, table)


def _xml_text(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


# GDAL raster attribute table codes: field types and usages (gdal.h).
_RAT_TYPES = {"int": 0, "real": 1, "string": 2}
_RAT_USAGES = {"Value": 5, "Count": 1, "Name": 2, "Red": 6, "Green": 7, "Blue": 8, "Alpha": 9}


def _rat_cell(kind: str, value) -> str:
    if kind == "string":
        return _xml_text(value)
    return repr(float(value)) if kind == "real" else str(int(value))


def write_category_names(path: str | os.PathLike, names, colors, *, columns=None,
                         overwrite: bool = False) -> None:
    """Write the GDAL side file (``NAME.tif.aux.xml``) that names a label GeoTIFF's values.

    GDAL reads it with the GeoTIFF (its "PAM" file): the band's category
    names (``GetCategoryNames``; QGIS labels the colour-table classes with
    them) and a thematic raster attribute table (``GetDefaultRAT``; QGIS's
    and ArcGIS's attribute table of the raster) with a row per value:
    Value, Name, the colour, and any further ``columns``.

    Parameters
    ----------
    path : path
        ``<label file>.aux.xml``.
    names : sequence of n str
        Name of value ``0 .. n-1``.
    colors : (n, 3) array of int in 0..255
        Colour of each value, as in the file's colour table.
    columns : dict of str to sequence of n numbers, optional
        More numeric columns, e.g. ``{"Pixels": [...], "Hectares": [...]}``;
        int sequences become integer columns, others real ones.
    overwrite : bool, default False
    """
    colors = np.asarray(colors)
    n = len(names)
    fields = [("Value", "int", list(range(n))), ("Name", "string", list(names))]
    fields += [(label, "int", colors[:, j].tolist()) for j, label in
               enumerate(("Red", "Green", "Blue"))]
    fields.append(("Alpha", "int", [255] * n))
    for label, values in (columns or {}).items():
        values = list(values)
        kind = "int" if all(isinstance(v, (int, np.integer)) for v in values) else "real"
        fields.append((label, kind, values))
    lines = ['<PAMDataset>', '  <PAMRasterBand band="1">', '    <CategoryNames>']
    lines += [f"      <Category>{_xml_text(name)}</Category>" for name in names]
    lines += ['    </CategoryNames>', '    <GDALRasterAttributeTable tableType="thematic">']
    for i, (label, kind, _) in enumerate(fields):
        lines.append(f'      <FieldDefn index="{i}"><Name>{_xml_text(label)}</Name>'
                     f"<Type>{_RAT_TYPES[kind]}</Type><Usage>{_RAT_USAGES.get(label, 0)}</Usage>"
                     "</FieldDefn>")
    for row in range(n):
        cells = "".join(f"<F>{_rat_cell(kind, values[row])}</F>" for _, kind, values in fields)
        lines.append(f'      <Row index="{row}">{cells}</Row>')
    lines += ['    </GDALRasterAttributeTable>', '  </PAMRasterBand>', '</PAMDataset>']
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
