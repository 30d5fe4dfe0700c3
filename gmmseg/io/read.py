"""`read_image`: any supported file (or DICOM folder) in, `Image` out; `as_image` for arrays."""

from __future__ import annotations

import dataclasses
import errno
import math
import numbers
import os
import stat
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImageReadError, counted, one_line
from .image import (
    _RGB,
    DEFAULT_MAX_PIXELS,
    Image,
    _default_channels,
    _finite_mask,
    logger,
)
from .photo import (
    _is_16bit_colour_png,
    _read_npy,
    _read_pillow,
    _read_png_16bit_colour,
    _read_tiff,
    is_geotiff,
)

#: File suffixes `read_image` handles (lower case, with the dot). A folder is
#: read as a DICOM series; GDAL reads more raster formats than listed here.
SUPPORTED_SUFFIXES = (
    ".bmp", ".dcm", ".jp2", ".jpeg", ".jpg", ".nii", ".nii.gz", ".npy", ".png", ".tif", ".tiff", ".vrt",
)

_READABLE = ("readable formats: PNG, JPEG, BMP, TIFF, GeoTIFF and other GDAL rasters, DICOM "
             "(file or series folder), NIfTI, NumPy .npy")
# Enough leading bytes to see the NIfTI-1 magic at offset 344.
_HEAD_BYTES = 352
# Content-less suffix hints, used only when the first bytes say nothing.
_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_RASTER_SUFFIXES = (".jp2", ".j2k", ".vrt", ".asc", ".nc", ".hdf", ".h5", ".ers", ".rst", ".sdat",
                    ".bil", ".bsq", ".bip", ".kea", ".dt0", ".dt1", ".dt2")


# --------------------------------------------------------------------------
# Conversions from arrays


#: More channels than this in a 3-D array read channel-last look like a volume's slices.
_MANY_CHANNELS = 16


def as_image(obj: Image | np.ndarray | str | os.PathLike, *, valid: np.ndarray | None = None,
             channel_axis: int | None = -1,
             spacing: tuple[float, ...] | None = None) -> Image:
    """Return `obj` as an `Image`.

    Arrays follow scikit-image's conventions: ``(H, W)`` is grey, a 3-D
    array is ``(H, W, C)`` (channels on ``channel_axis``, the last by
    default) and ``channel_axis=None`` makes it a single-channel volume
    ``(Z, H, W)``; a 4-D array is ``(Z, H, W, C)``.  Three channels of
    ``uint8``/``uint16``, or of floats in ``[0, 1]``, are an RGB photo.

    Parameters
    ----------
    obj : Image, ndarray or path
        An `Image` (returned as is when `valid` and `spacing` are None); an
        array of a numeric dtype (not copied); or a file path, read with
        `read_image`.
    valid : (H, W) or (Z, H, W) ndarray of bool, optional
        Extra validity mask, combined with the image's own mask by AND.
    channel_axis : int or None, default -1
        The array's channel axis; None: no channel axis (a 3-D array is a
        volume).  A 3-D array read with ``channel_axis=-1`` that has more
        than 16 channels gets a warning: it may be a volume (``channel_axis=2``
        reads it as channels without one).
    spacing : sequence of float, optional
        Physical size of a pixel along each spatial axis (``(z, y, x)`` for
        volumes), e.g. anisotropic voxels; replaces the image's own.

    Returns
    -------
    Image
        For arrays, pixels with a NaN or infinite value in any channel are
        invalid, and ``data`` is a view of `obj` (never modified).

    Raises
    ------
    TypeError
        `obj` is of another type or dtype, or `valid` is not boolean.
    ValueError
        `obj` has another number of dimensions or no pixels, `channel_axis`
        is out of range, or `valid` or `spacing` has the wrong shape.
    ImageReadError
        `obj` is a path that cannot be read.

    Examples
    --------
    >>> import numpy as np
    >>> img = as_image(np.array([[0.0, np.nan], [1.0, 2.0]], np.float32))
    >>> img.data.shape, img.valid.tolist()
    ((2, 2, 1), [[True, False], [True, True]])
    >>> as_image(np.zeros((8, 4, 4)), channel_axis=None, spacing=(3, 1, 1)).spatial_shape
    (8, 4, 4)
    >>> as_image(np.full((4, 4, 3), 0.5)).is_rgb
    True
    """
    if isinstance(obj, Image):
        image = obj
    elif isinstance(obj, np.ndarray):
        image = _image_from_array(obj, channel_axis)
    elif isinstance(obj, (str, os.PathLike)):
        image = read_image(obj)
    else:
        raise TypeError(f"image must be an Image, an ndarray or a file path, got {type(obj).__name__}")
    if spacing is not None:
        image = dataclasses.replace(image, spacing=tuple(spacing), meta=dict(image.meta))
    if valid is None:
        return image
    if not isinstance(valid, np.ndarray) or valid.dtype != np.bool_:
        got = valid.dtype if isinstance(valid, np.ndarray) else type(valid).__name__
        raise TypeError(f"valid must be a bool ndarray, got {got}")
    if valid.shape != image.spatial_shape:
        raise ValueError(
            f"valid must have the image's spatial shape {image.spatial_shape}, got {valid.shape}"
        )
    return dataclasses.replace(image, valid=image.valid & valid, meta=dict(image.meta))


def _image_from_array(array: np.ndarray, channel_axis=-1) -> Image:
    if array.dtype.kind not in "biuf":
        raise TypeError(f"image must have a bool, integer or float dtype, got {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and channel_axis is None):
        data = array[..., np.newaxis]
    elif array.ndim in (3, 4) and channel_axis is not None:
        if (isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer))
                or not -array.ndim <= channel_axis < array.ndim):
            raise ValueError(f"channel_axis must be None or an axis of the {array.ndim}-D "
                             f"array, got {channel_axis!r}")
        data = np.moveaxis(array, channel_axis, -1)
        if array.ndim == 3 and channel_axis == -1 and data.shape[-1] > _MANY_CHANNELS:
            warnings.warn(
                f"image of shape {array.shape} is read as (H, W, C) with {data.shape[-1]} "
                "channels; if it is a (Z, H, W) volume, pass channel_axis=None",
                UserWarning, stacklevel=3)
    else:
        raise ValueError(f"image must have shape (H, W), (H, W, C) or (Z, H, W, C) (or (Z, H, W) "
                         f"with channel_axis=None), got shape {array.shape}")
    if data.size == 0:
        raise ValueError(f"image must have at least one pixel and one channel, got shape {array.shape}")
    valid = _finite_mask(data)
    return Image(
        data=data,
        valid=valid,
        channels=_array_channels(data, valid),
        meta={"format": "ndarray"},
    )


def _array_channels(data: np.ndarray, valid: np.ndarray) -> tuple[str, ...]:
    """Channel names of an array: RGB for 3 channels of photo integers or floats in [0, 1]."""
    if data.shape[-1] == 3 and data.dtype.kind == "f" and valid.any():
        # scikit-image's float images are in [0, 1]: such an array is a photo.
        # min/max over the valid pixels of each channel, without a copy of them
        if all(data[..., c].min(where=valid, initial=np.inf) >= 0
               and data[..., c].max(where=valid, initial=-np.inf) <= 1 for c in range(3)):
            return _RGB
    return _default_channels(data.shape[-1], data.dtype)



# --------------------------------------------------------------------------
# Reading


def parse_bands(text: str) -> tuple[int, ...]:
    """Band numbers from a comma-separated string such as ``"4,3,2"`` (1-based, as GDAL counts).

    Raises
    ------
    ValueError
        The text is not a comma-separated list of integers >= 1.

    Examples
    --------
    >>> parse_bands("4, 3,2")
    (4, 3, 2)
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        bands = tuple(int(p) for p in parts)
    except ValueError as err:
        raise ValueError(f"bands must be comma-separated band numbers such as 4,3,2, got {text!r}") from err
    return _check_bands(bands)


def _check_bands(bands: object) -> tuple[int, ...] | None:
    if bands is None:
        return None
    if isinstance(bands, str):
        return parse_bands(bands)
    if isinstance(bands, (bool, np.bool_, numbers.Integral)):
        bands = (bands,)
    try:
        items = tuple(bands)
    except TypeError as err:
        raise TypeError(f"bands must be a sequence of band numbers, got {type(bands).__name__}") from err
    if not items:
        raise ValueError("bands must name at least one band, got an empty sequence")
    for b in items:
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, numbers.Integral):
            raise TypeError(f"bands must hold integers (band numbers from 1), got {b!r}")
        if b < 1:
            raise ValueError(f"bands are numbered from 1 (as in GDAL and rasterio), got {b}")
    return tuple(int(b) for b in items)


def _check_options(max_pixels, nodata, volume, series) -> tuple[float | None, int | None, str | None]:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise TypeError(f"max_pixels must be an integer, got {type(max_pixels).__name__}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if nodata is not None:
        if isinstance(nodata, (bool, np.bool_)) or not isinstance(nodata, numbers.Real):
            raise TypeError(f"nodata must be a number, got {type(nodata).__name__}")
        nodata = float(nodata)
        if math.isinf(nodata):
            raise ValueError(f"nodata must be finite or NaN, got {nodata}")
    if volume is not None:
        if isinstance(volume, (bool, np.bool_)) or not isinstance(volume, numbers.Integral):
            raise TypeError(f"volume must be an integer, got {type(volume).__name__}")
        if volume < 0:
            raise ValueError(f"volume must be >= 0 (volumes are numbered from 0), got {volume}")
        volume = int(volume)
    if series is not None and not isinstance(series, str):
        raise TypeError(f"series must be a SeriesInstanceUID string, got {type(series).__name__}")
    return nodata, volume, series


def read_image(
    path: str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bands: str | tuple[int, ...] | list[int] | None = None,
    nodata: float | None = None,
    volume: int | None = None,
    series: str | None = None,
) -> Image:
    """Read an image, a raster or a medical volume.

    The format is recognised from the file's content (the suffix only breaks
    ties for headerless files): PNG, JPEG, BMP, TIFF, NumPy ``.npy``;
    GeoTIFF (a TIFF with GeoTIFF tags) and other GDAL rasters through
    rasterio; DICOM files and folders of DICOM files (a series) through
    pydicom; NIfTI ``.nii`` / ``.nii.gz`` through nibabel. Files are opened
    read-only.

    Parameters
    ----------
    path : str or path-like
        File to read, or a folder holding a DICOM series.
    max_pixels : int, default `DEFAULT_MAX_PIXELS`
        Largest number of pixels (voxels for volumes) to decode; larger
        images are refused from their header, before decoding, to defeat
        decompression bombs.
    bands : sequence of int or str, optional
        Bands (channels) to keep, numbered from 1 as GDAL does, in this
        order: ``(4, 3, 2)`` or ``"4,3,2"``. Default: all (rasters: all but
        alpha bands).
    nodata : float, optional
        Pixel value that marks missing data. For rasters it replaces the
        file's nodata value; for other formats pixels whose every channel
        equals it become invalid. NaN is always invalid.
    volume : int, optional
        Volume of a 4-D NIfTI file to read, from 0 (default 0).
    series : str, optional
        SeriesInstanceUID to read when a DICOM folder holds several series
        (required then).

    Returns
    -------
    Image
        ``data`` is ``(H, W, C)`` or ``(Z, H, W, C)`` for volumes (DICOM
        series and multi-frame files, NIfTI, multi-page TIFF stacks) in the
        stored dtype (DICOM: after RescaleSlope / RescaleIntercept, e.g. CT
        in Hounsfield units; NIfTI: after scl_slope / scl_inter). ``spacing``
        follows the spatial axes: ``(z, y, x)`` voxel size for volumes, pixel
        size for georeferenced rasters. ``valid`` is False at alpha == 0,
        NaN, nodata and masked pixels. ``meta["format"]`` is one of
        ``"png"``, ``"jpeg"``, ``"bmp"``, ``"tiff"``, ``"npy"``,
        ``"geotiff"`` (or another GDAL driver name), ``"dicom"``,
        ``"nifti"``; ``meta`` also holds what writing results back needs
        (``affine`` for DICOM and NIfTI; ``crs``, ``transform``, ``nodata``
        for rasters). See `gmmseg.io.medical` for the volume axis
        convention.

    Raises
    ------
    ImageReadError
        The file is missing, empty, not an image of a readable format,
        truncated or corrupt, has no pixels or more than `max_pixels`, no
        valid pixel (a raster that is all nodata), a band, volume or series
        that does not exist, or needs an optional package that is not
        installed (the message gives the ``pip install`` command). The
        one-line message names the file.
    TypeError, ValueError
        An option has the wrong type or value.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "tiny.npy"
    >>> np.save(path, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> img = read_image(path)
    >>> img.data.shape, img.channels, img.meta["format"]
    ((2, 3, 1), ('gray',), 'npy')
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    bands = _check_bands(bands)
    nodata, volume, series = _check_options(max_pixels, nodata, volume, series)
    path = Path(path)
    if path.is_dir():
        from .medical import read_dicom_series

        image = read_dicom_series(path, max_pixels=max_pixels, series=series)
    else:
        head = _read_head(path)
        kind = _sniff(head, path.name.lower())
        if kind in _UNSUPPORTED_KINDS:
            raise ImageReadError(f"{path}: unsupported format {kind}; {_READABLE}")
        if kind is None:
            raise ImageReadError(f"{path}: not a supported image file (unrecognised content); {_READABLE}")
        if kind == "tiff" and is_geotiff(path):
            kind = "raster"
        if kind == "raster":
            from .geo import read_raster

            # The raster reader applies bands and nodata itself, as GDAL defines them.
            image = read_raster(path, max_pixels=max_pixels, bands=bands, nodata=nodata)
            logger.debug("read %s: %s", path, image)
            return image
        image = _read_file(path, kind, head, max_pixels, volume)
    image = _select_bands(image, bands)
    image = _apply_nodata(image, nodata)
    logger.debug("read %s: %s", path, image)
    return image


def _read_file(path: Path, kind: str, head: bytes, max_pixels: int, volume: int | None) -> Image:
    """A file of a recognised ``kind`` other than a raster, as it is stored."""
    if kind == "dicom":
        from .medical import read_dicom

        return read_dicom(path, max_pixels=max_pixels)
    if kind == "nifti":
        from .medical import read_nifti

        return read_nifti(path, max_pixels=max_pixels, volume=volume)
    if kind == "npy":
        return _read_npy(path, max_pixels)
    if kind == "tiff":
        return _read_tiff(path, max_pixels)
    if kind == "png" and _is_16bit_colour_png(head):
        return _read_png_16bit_colour(path, head, max_pixels)
    return _read_pillow(path, kind, max_pixels)


def _select_bands(image: Image, bands: tuple[int, ...] | None) -> Image:
    if bands is None:
        return image
    n = image.n_channels
    wrong = [b for b in bands if b > n]
    if wrong:
        raise ImageReadError(f"{image.path}: band {wrong[0]} does not exist; the image has "
                             f"{counted(n, 'channel')}, numbered 1 to {n}")
    if bands == tuple(range(1, n + 1)):
        return image
    index = [b - 1 for b in bands]
    channels = tuple(image.channels[i] for i in index) if image.channels else ()
    if len(set(channels)) != len(channels):
        channels = tuple(f"band{b}" for b in bands)
    meta = {**image.meta, "bands": bands}
    return dataclasses.replace(image, data=np.ascontiguousarray(image.data[..., index]),
                               channels=channels, meta=meta)


def _apply_nodata(image: Image, nodata: float | None) -> Image:
    if nodata is None:
        return image
    data = image.data
    if math.isnan(nodata):
        return dataclasses.replace(image, meta={**image.meta, "nodata": nodata})
    missing = np.ones(image.spatial_shape, dtype=bool)
    for c in range(image.n_channels):
        missing &= data[..., c] == nodata
    valid = image.valid & ~missing
    if not valid.any():
        raise ImageReadError(f"{image.path}: no valid pixels: every pixel is nodata or masked "
                             f"(nodata={nodata:g})")
    return dataclasses.replace(image, valid=valid, meta={**image.meta, "nodata": nodata})


def _read_head(path: Path) -> bytes:
    """Check that `path` is a readable, non-empty file and return its first bytes."""
    try:
        st = path.stat()
    except FileNotFoundError as err:
        if path.is_symlink():
            raise ImageReadError(f"{path}: broken symbolic link (its target "
                                 f"{os.readlink(path)} does not exist)") from err
        raise ImageReadError(f"{path}: file not found") from err
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ImageReadError(f"{path}: symbolic link loop (the link leads back to "
                                 "itself)") from err
        raise ImageReadError(f"{path}: cannot access file ({one_line(err, with_type=True)})") from err
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(f"{path}: is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            return f.read(_HEAD_BYTES)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot open file ({one_line(err, with_type=True)})") from err


def _sniff(head: bytes, name: str = "") -> str | None:
    """Reader key for a file from its first bytes (and, for headerless data, its lower-case name).

    Returns a reader key, a name from `_UNSUPPORTED_KINDS`, or None.
    """
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c") and name.endswith(_NIFTI_SUFFIXES):
        return "nifti"  # sizeof_hdr 348 with a damaged magic: let the NIfTI reader say what is wrong
    if head.startswith(b"\x1f\x8b"):
        return "nifti" if name.endswith(".nii.gz") else "gzip"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "raster"  # JPEG 2000 (JP2 box or raw codestream), read by GDAL
    if head.lstrip().startswith(b"<VRTDataset"):
        return "raster"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"PK\x03\x04"):
        return "zip (.npz?)"
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(_DICOM_SUFFIXES) or (head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00"):
        return "dicom"  # DICOM without the 128-byte preamble
    if name.endswith(_RASTER_SUFFIXES):
        return "raster"
    return None


_UNSUPPORTED_KINDS = ("gzip", "GIF", "WebP", "zip (.npz?)")
