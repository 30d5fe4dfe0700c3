"""Window-by-window readers for images larger than memory.

Owns :func:`open_windows`: a file opened once, described from its header
(spatial shape, bands, dtype, internal block size, the metadata results
are written back with), whose windows are read one at a time as
:class:`Image` s that hold exactly the pixels and validity the whole-file
readers (:func:`gmmseg.io.read_image`) give there:

========================= ==================================================
input                     how a window is read
========================= ==================================================
GeoTIFF, any GDAL raster  rasterio windows (``ds.read(window=...)``), masks
                          and nodata as :func:`gmmseg.io.geo.read_raster`
plain TIFF (tiled/strips) tifffile: only the tiles or strips the window
                          touches are read and decoded
NumPy ``.npy``            a memory map (``np.load(mmap_mode="r")``)
NIfTI                     nibabel's array proxy, slab by slab
========================= ==================================================

Windows are ``(start, stop)`` pairs per spatial axis.  Nothing here fits
or labels; :mod:`gmmseg.pipeline.windowed` plans and runs the windows.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ImageReadError, one_line
from .image import Image, _finite_mask, logged_warnings, require

Region = tuple[tuple[int, int], ...]

#: GDAL's block cache while windows are read (GDAL's default is 5% of the
#: RAM, per process): windows are read once each, so a small cache loses
#: nothing and keeps the memory budget honest.
GDAL_CACHE = 64 * 1024**2


@contextlib.contextmanager
def gdal_cache(size=GDAL_CACHE):
    """GDAL's block cache held to ``size`` bytes in this block (nothing without rasterio)."""
    try:
        import rasterio
    except ImportError:
        yield
        return
    with rasterio.Env(GDAL_CACHEMAX=max(1, size // 2**20)):
        yield


@dataclass
class WindowSource:
    """An image file whose windows are read on demand.

    Attributes
    ----------
    path : Path
    shape : tuple of int
        Spatial shape, ``(H, W)`` or ``(Z, H, W)``.
    n_channels : int
    dtype : numpy dtype
        Of the pixels a window holds.
    block : tuple of int
        The file's internal block (tile, strip, slab), per spatial axis:
        windows aligned to it read every block once.
    channels, spacing, meta :
        As the whole-file reader's :class:`Image` has them.
    """

    path: Path
    shape: tuple[int, ...]
    n_channels: int
    dtype: np.dtype
    block: tuple[int, ...]
    channels: tuple[str, ...] = ()
    spacing: tuple[float, ...] | None = None
    meta: dict = field(default_factory=dict)
    all_valid: bool = False  # every pixel valid, known from the header
    _reader: object = None
    _options: dict = field(default_factory=dict)

    def read(self, region: Region) -> Image:
        """The window ``region`` as an :class:`Image` (may hold no valid pixel)."""
        if len(region) != len(self.shape) or any(
                not 0 <= a < b <= n for (a, b), n in zip(region, self.shape)):
            raise ValueError(f"window {region} is not inside the image's {self.shape}")
        try:
            data, valid = self._reader(self, region)
        except (ImageReadError, MemoryError):
            raise
        except Exception as err:
            raise ImageReadError(f"{self.path}: cannot read window {region} "
                                 f"({one_line(err, with_type=True)})") from err
        nodata = self._options.get("nodata")
        if nodata is not None and self.meta.get("reader") != "rasterio" and not math.isnan(nodata):
            valid = valid & ~np.all(data == nodata, axis=-1)
        return Image(data=data, valid=valid, path=self.path, spacing=self.spacing,
                     channels=self.channels, meta=self.meta)

    def close(self) -> None:
        handle = self._options.pop("handle", None)
        if handle is not None:
            handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def options(self) -> dict:
        """The keyword arguments that reopen this source (``open_windows(path, **options)``)."""
        return {k: self._options.get(k) for k in ("bands", "nodata", "volume")}


def open_windows(path, *, bands=None, nodata=None, volume=None) -> WindowSource:
    """Open ``path`` for reading window by window.

    Parameters
    ----------
    path : str or path-like
    bands, nodata, volume :
        As :func:`gmmseg.io.read_image` takes them.

    Raises
    ------
    ImageReadError
        The file cannot be read window by window (a PNG or JPEG, a TIFF
        with an orientation, alpha or planar layout that needs the whole
        image, a DICOM series), or is not readable at all; one line naming
        the file.
    """
    from .read import _check_bands, _read_head, _sniff, is_geotiff

    path = Path(path)
    bands = _check_bands(bands)
    kind = _sniff(_read_head(path), path.name.lower())
    if kind == "tiff" and is_geotiff(path):
        kind = "raster"
    options = {"bands": bands, "nodata": None if nodata is None else float(nodata),
               "volume": volume}
    openers = {"raster": _open_raster, "tiff": _open_tiff, "npy": _open_npy,
               "nifti": _open_nifti}
    if kind not in openers:
        raise ImageReadError(f"{path}: {kind or 'this'} files cannot be read window by window; "
                             "convert it to a tiled GeoTIFF (gdal_translate -co TILED=YES)")
    source = openers[kind](path, options)
    source._options.update(options)
    if bands is not None and kind != "raster":
        wrong = [b for b in bands if b > source.n_channels]
        if wrong:
            raise ImageReadError(f"{path}: band {wrong[0]} does not exist; the image has "
                                 f"{source.n_channels} channels, numbered 1 to {source.n_channels}")
        source.channels = tuple(source.channels[b - 1] for b in bands) if source.channels else ()
        source.n_channels = len(bands)
    return source


def _bands_last(data: np.ndarray, bands) -> np.ndarray:
    if bands is None:
        return np.ascontiguousarray(data)
    return np.ascontiguousarray(data[..., [b - 1 for b in bands]])


# -- rasterio -------------------------------------------------------------------


def _open_raster(path: Path, options: dict) -> WindowSource:
    rasterio = require("rasterio", what="reading GeoTIFF / raster files", path=path)
    from .geo import band_selection, raster_description

    try:
        with logged_warnings(path):
            ds = rasterio.open(path)
    except Exception as err:
        raise ImageReadError(f"{path}: truncated, corrupt or unsupported raster file "
                             f"({one_line(err, with_type=True)})") from err
    try:
        indexes, dtype = band_selection(rasterio, ds, path, options["bands"])
        meta, spacing, channels = raster_description(ds, indexes, dtype, options["nodata"])
        flags = rasterio.enums.MaskFlags
        all_valid = (options["nodata"] is None and dtype.kind != "f" and all(
            ds.mask_flag_enums[i - 1] == [flags.all_valid] for i in indexes))
        block = tuple(int(b) for b in ds.block_shapes[indexes[0] - 1])
    except Exception:
        ds.close()
        raise
    source = WindowSource(path, (ds.height, ds.width), len(indexes), dtype, block, channels,
                          spacing, meta, all_valid, _read_raster_window)
    source._options.update(handle=ds, indexes=indexes)
    return source


def _read_raster_window(source: WindowSource, region: Region):
    import rasterio
    from rasterio.windows import Window

    from .geo import _valid_mask

    (r0, r1), (c0, c1) = region
    window = Window(c0, r0, c1 - c0, r1 - r0)
    ds, indexes = source._options["handle"], source._options["indexes"]
    with logged_warnings(source.path):
        data = ds.read(list(indexes), window=window, out_dtype=source.dtype)
        valid = _valid_mask(rasterio, ds, data, indexes, source._options["nodata"],
                            window=window)
    return np.ascontiguousarray(np.moveaxis(data, 0, -1)), valid


def _opened(open_file, path: Path, kind: str):
    """``open_file(path)``; what it raises becomes the readers' one-line "corrupt" error."""
    try:
        return open_file(path)
    except Exception as err:
        raise ImageReadError(f"{path}: truncated or corrupt {kind} file "
                             f"({one_line(err, with_type=True)})") from err


# -- tifffile --------------------------------------------------------------------


def _open_tiff(path: Path, options: dict) -> WindowSource:
    import tifffile

    tif = _opened(tifffile.TiffFile, path, "TIFF")
    try:
        return _tiff_source(path, tif)
    except BaseException:
        tif.close()
        raise


def _tiff_source(path: Path, tif) -> WindowSource:
    import tifffile

    from .image import _default_channels

    if not tif.pages:
        raise ImageReadError(f"{path}: TIFF file holds no image")
    page = tif.pages[0]
    orientation = page.tags.get("Orientation")
    simple = (len(tif.pages) == 1 and page.planarconfig == 1 and not any(page.extrasamples)
              and page.ndim in (2, 3) and (orientation is None or orientation.value == 1)
              and page.photometric in (tifffile.PHOTOMETRIC.MINISBLACK,
                                       tifffile.PHOTOMETRIC.RGB)
              and page.compression in tifffile.TIFF.DECOMPRESSORS)
    if not simple:
        raise ImageReadError(f"{path}: this TIFF (several pages, alpha, planar bands, an "
                             "orientation or an unusual compression) cannot be read window by "
                             "window; convert it to a tiled GeoTIFF (gdal_translate -co TILED=YES)")
    shape = page.shape[:2]
    n_channels = page.shape[2] if page.ndim == 3 else 1
    dtype = np.dtype(page.dtype)
    channels = (("R", "G", "B") if page.photometric == tifffile.PHOTOMETRIC.RGB and n_channels == 3
                else _default_channels(n_channels, dtype))
    block = (int(page.chunks[0]), int(page.chunks[1]))
    source = WindowSource(path, shape, n_channels, dtype, block, channels, None,
                          {"format": "tiff"}, dtype.kind != "f", _read_tiff_window)
    source._options.update(handle=tif)
    return source


def _read_tiff_window(source: WindowSource, region: Region):
    tif = source._options["handle"]
    page = tif.pages[0]
    (r0, r1), (c0, c1) = region
    th, tw = source.block
    n_across = math.ceil(page.shape[1] / tw) if page.is_tiled else 1
    channels = page.shape[2] if page.ndim == 3 else 1
    out = np.empty((r1 - r0, c1 - c0, channels), page.dtype)
    fh = tif.filehandle
    for ty in range(r0 // th, (r1 - 1) // th + 1):
        for tx in range(c0 // tw, (c1 - 1) // tw + 1) if page.is_tiled else (0,):
            index = ty * n_across + tx
            fh.seek(page.dataoffsets[index])
            chunk, where, _ = page.decode(fh.read(page.databytecounts[index]), index,
                                          jpegtables=page.jpegtables)
            y, x = where[2], where[3]
            chunk = chunk[0].reshape(chunk.shape[1], chunk.shape[2], -1)
            ya, yb = max(r0, y), min(r1, y + chunk.shape[0], page.shape[0])
            xa, xb = max(c0, x), min(c1, x + chunk.shape[1], page.shape[1])
            out[ya - r0:yb - r0, xa - c0:xb - c0] = chunk[ya - y:yb - y, xa - x:xb - x]
    data = _bands_last(out, source._options["bands"])
    return data, _finite_mask(data)


# -- NumPy ----------------------------------------------------------------------------


def _open_npy(path: Path, options: dict) -> WindowSource:
    from .image import _default_channels

    arr = _opened(lambda p: np.load(p, mmap_mode="r", allow_pickle=False), path, ".npy")
    if arr.ndim not in (2, 3) or arr.dtype.kind not in "biuf" or 0 in arr.shape:
        raise ImageReadError(f"{path}: .npy array must be 2-D (H, W) or 3-D (H, W, C) of "
                             f"numbers, got shape {arr.shape} dtype {arr.dtype}")
    n_channels = arr.shape[2] if arr.ndim == 3 else 1
    # C order: a band of whole rows is one contiguous read.
    block = (1, arr.shape[1]) if arr.flags.c_contiguous else (arr.shape[0], 1)
    source = WindowSource(path, arr.shape[:2], n_channels, arr.dtype, block,
                          _default_channels(n_channels, arr.dtype), None, {"format": "npy"},
                          arr.dtype.kind != "f", _read_npy_window)
    source._options.update(array=arr)
    return source


def _read_npy_window(source: WindowSource, region: Region):
    arr = source._options["array"]
    (r0, r1), (c0, c1) = region
    window = np.asarray(arr[r0:r1, c0:c1])
    data = _bands_last(window if window.ndim == 3 else window[..., np.newaxis],
                       source._options["bands"])
    return data, _finite_mask(data)


# -- NIfTI ----------------------------------------------------------------------------


def _open_nifti(path: Path, options: dict) -> WindowSource:
    """A NIfTI volume read slab by slab; axes as :func:`gmmseg.io.medical.read_nifti`."""
    nib = require("nibabel", what="reading NIfTI", path=path)
    img = _opened(nib.load, path, "NIfTI")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3 or shape[2] < 2:
        raise ImageReadError(f"{path}: a 2-D NIfTI image is read whole; window by window "
                             "reading is for volumes")
    volume = options.get("volume") or 0
    dtype = img.get_data_dtype()
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    spacing = (zooms[2], zooms[1], zooms[0])
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        spacing = None
    meta = {"format": "nifti", "affine": np.asarray(img.affine, dtype=np.float64),
            "shape": shape, "volume": volume, "n_volumes": shape[3] if len(shape) > 3 else 1,
            "sform_code": int(img.header["sform_code"]),
            "qform_code": int(img.header["qform_code"]),
            "xyzt_units": img.header.get_xyzt_units(), "dtype": str(dtype)}
    scaled = np.dtype(np.asarray(img.dataobj[:1, :1, :1] if len(shape) == 3
                                 else img.dataobj[:1, :1, :1, volume]).dtype)
    source = WindowSource(path, (shape[2], shape[1], shape[0]), 1, scaled, (1, shape[1], shape[0]),
                          ("gray",), spacing, meta, scaled.kind != "f", _read_nifti_window)
    source._options.update(proxy=img.dataobj, volume=volume, ndim=len(shape))
    return source


def _read_nifti_window(source: WindowSource, region: Region):
    (z0, z1), (y0, y1), (x0, x1) = region
    proxy, volume = source._options["proxy"], source._options["volume"]
    index = (slice(x0, x1), slice(y0, y1), slice(z0, z1))
    if source._options["ndim"] > 3:
        index += (volume,) + (0,) * (source._options["ndim"] - 4)
    arr = np.asanyarray(proxy[index])
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    data = np.ascontiguousarray(arr.transpose(2, 1, 0))[..., np.newaxis]
    return data, _finite_mask(data)
