"""Readers for photos and plain arrays: PNG, JPEG, BMP, TIFF (not GeoTIFF), NumPy ``.npy``."""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from ..errors import ImageReadError, counted, one_line
from .image import (
    _RGB,
    Image,
    _check_pixels,
    _default_channels,
    _finite_mask,
)

_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "tiff": "TIFF", "npy": ".npy"}
# Pillow plugins allowed for each sniffed format; phone JPEGs often open as MPO.
_PILLOW_FORMATS = {"png": ["PNG"], "jpeg": ["JPEG", "MPO"], "bmp": ["BMP"], "tiff": ["TIFF"]}

# Pillow's decompression-bomb limit is process-wide and lower than ours, so it
# is switched off under this lock while Pillow decodes and `_check_pixels`
# applies our own limit to the header sizes instead.
_PILLOW_LIMIT_LOCK = threading.Lock()

# TIFF tags that make a TIFF a GeoTIFF (or a GDAL raster with nodata):
# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GDAL_NODATA.
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 42113)


def is_geotiff(path: Path) -> bool:
    """Whether the first page of the TIFF at `path` carries GeoTIFF (or GDAL nodata) tags.

    False for files tifffile cannot parse: the TIFF reader then reports what is wrong.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            return any(code in tags for code in GEOTIFF_TAGS)
    except Exception:
        return False


@contextlib.contextmanager
def _pillow_limit_off() -> Iterator[None]:
    with _PILLOW_LIMIT_LOCK:
        saved = PILImage.MAX_IMAGE_PIXELS
        PILImage.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            PILImage.MAX_IMAGE_PIXELS = saved


def _read_pillow(path: Path, kind: str, max_pixels: int) -> Image:
    fmt = _FORMAT_NAMES[kind]
    with _pillow_limit_off():
        try:
            with PILImage.open(path, formats=_PILLOW_FORMATS[kind]) as im:
                _check_pixels(path, (im.height, im.width), max_pixels)
                # Decode inside the try: Pillow reads lazily, so truncation shows up here.
                im.load()
                mode = im.mode
                ImageOps.exif_transpose(im, in_place=True)
                data, valid, channels = _pillow_arrays(im, kind)
        except (ImageReadError, MemoryError):
            raise
        except UnidentifiedImageError as err:
            raise ImageReadError(f"{path}: not a readable {fmt} image ({one_line(err, with_type=True)})") from err
        except Exception as err:
            raise ImageReadError(f"{path}: truncated or corrupt {fmt} file ({one_line(err, with_type=True)})") from err
    if data is None:
        raise ImageReadError(f"{path}: unsupported {fmt} pixel mode {mode!r}")
    if data.dtype.kind == "f":
        valid &= _finite_mask(data)
    return Image(data=data, valid=valid, path=path, channels=channels, meta={"format": kind, "mode": mode})


def _pillow_arrays(
    im: PILImage.Image, kind: str
) -> tuple[np.ndarray | None, np.ndarray | None, tuple[str, ...]]:
    """Pixels, validity and channel names of a loaded Pillow image; data is None for unknown modes."""
    mode = im.mode
    transparency = im.info.get("transparency")
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or transparency is not None else "RGB")
        transparency = None
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    mode = im.mode
    arr = np.asarray(im)
    if mode in ("L", "RGB") or mode.startswith("I;16") or mode in ("I", "F"):
        if mode.startswith("I;16"):
            arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        elif mode == "I" and kind == "png":
            # PNG holds at most 16 bits a sample, whatever Pillow's mode says.
            arr = arr.astype(np.uint16, copy=False)
        data = arr if arr.ndim == 3 else arr[..., np.newaxis]
        valid = np.ones(data.shape[:-1], dtype=bool)
        if transparency is not None and not isinstance(transparency, bytes):
            # PNG tRNS for grey / RGB: one colour value marks transparent pixels.
            key = np.asarray(transparency, dtype=data.dtype).reshape(-1)
            if key.size == data.shape[-1]:
                valid = ~np.all(data == key, axis=-1)
        return data, valid, ("gray",) if data.shape[-1] == 1 else _RGB
    if mode in ("LA", "RGBA"):
        n = arr.shape[-1] - 1
        data = np.ascontiguousarray(arr[..., :n])
        valid = arr[..., n] != 0
        return data, valid, ("gray",) if n == 1 else _RGB
    return None, None, ()


def _is_16bit_colour_png(head: bytes) -> bool:
    # IHDR: bit depth at byte 24, colour type at 25 (0 grey, 2 RGB, 4 grey+alpha, 6 RGBA).
    return len(head) >= 26 and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6)


def _read_png_16bit_colour(path: Path, head: bytes, max_pixels: int) -> Image:
    """16-bit RGB(A) / grey+alpha PNG, which Pillow would reduce to 8 bits; decoded by OpenCV."""
    width, height = struct.unpack(">II", head[16:24])
    colour_type = head[25]
    _check_pixels(path, (height, width), max_pixels)
    try:
        # Pillow checks chunk CRCs and truncation without decoding, and says
        # what is wrong, where OpenCV would only print libpng errors to stderr.
        with _pillow_limit_off(), PILImage.open(path, formats=["PNG"]) as im:
            im.verify()
        buffer = np.fromfile(path, dtype=np.uint8)
        arr = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except (MemoryError, ImageReadError):
        raise
    except Exception as err:
        raise ImageReadError(f"{path}: truncated or corrupt PNG file ({one_line(err, with_type=True)})") from err
    if arr is None or arr.shape[:2] != (height, width) or arr.dtype != np.uint16 or arr.ndim != 3:
        raise ImageReadError(f"{path}: truncated or corrupt PNG file (16-bit decoding failed)")
    valid = arr[..., 3] != 0 if arr.shape[-1] == 4 else np.ones((height, width), dtype=bool)
    if colour_type == 4:
        # OpenCV expands grey+alpha to BGRA with B == G == R.
        return Image(data=np.ascontiguousarray(arr[..., :1]), valid=valid, path=path, channels=("gray",),
                     meta={"format": "png", "mode": "LA;16"})
    code = cv2.COLOR_BGRA2RGB if arr.shape[-1] == 4 else cv2.COLOR_BGR2RGB
    mode = "RGBA;16" if colour_type == 6 else "RGB;16"
    return Image(data=cv2.cvtColor(arr, code), valid=valid, path=path, channels=_RGB,
                 meta={"format": "png", "mode": mode})


def _read_tiff(path: Path, max_pixels: int) -> Image:
    use_pillow = False
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ImageReadError(f"{path}: TIFF file holds no image")
            series = tif.series[0]
            page = series.keyframe
            order, has_channel_axis, is_volume = _tiff_layout(path, series.axes)
            spatial = tuple(series.shape[series.axes.index(a)] for a in order if a not in "SC")
            _check_pixels(path, spatial, max_pixels)
            use_pillow = _tiff_needs_pillow(page)
            if use_pillow and (is_volume or len(tif.pages) > 1 or not _pillow_keeps_tiff_values(page)):
                hint = ""
                if page.compression not in tifffile.TIFF.DECOMPRESSORS:
                    hint = "; installing imagecodecs may help (pip install imagecodecs)"
                raise ImageReadError(
                    f"{path}: unsupported TIFF ({_name(page.compression)} compression, "
                    f"{_name(page.photometric)}, {page.bitspersample}-bit, {counted(len(tif.pages), 'page')}){hint}"
                )
            if not use_pillow:
                arr = series.asarray()
                photometric = page.photometric
                extrasamples = tuple(int(e) for e in page.extrasamples)
                orientation_tag = page.tags.get("Orientation")
                orientation = int(orientation_tag.value) if orientation_tag is not None else 1
    except (ImageReadError, MemoryError):
        raise
    except Exception as err:
        raise ImageReadError(f"{path}: truncated or corrupt TIFF file ({one_line(err, with_type=True)})") from err
    if use_pillow:
        return _read_pillow(path, "tiff", max_pixels)

    arr = np.transpose(arr, [series.axes.index(a) for a in order])
    if not has_channel_axis:
        arr = arr[..., np.newaxis]
    arr = _apply_orientation(arr, orientation)
    valid = np.ones(arr.shape[:-1], dtype=bool)
    is_rgb = photometric == tifffile.PHOTOMETRIC.RGB
    n_colour = 3 if is_rgb else 1
    # ExtraSamples 1 / 2: associated / unassociated alpha right after the colour samples.
    if extrasamples and extrasamples[0] in (1, 2) and arr.shape[-1] > n_colour:
        valid = arr[..., n_colour] != 0
        arr = np.delete(arr, n_colour, axis=-1)
    if arr.dtype.kind == "f":
        valid &= _finite_mask(arr)
    n = arr.shape[-1]
    if is_rgb and n >= 3:
        channels = _RGB + tuple(f"band{i}" for i in range(4, n + 1))
    elif n == 1:
        channels = ("gray",)
    else:
        channels = tuple(f"band{i}" for i in range(1, n + 1))
    return Image(data=arr, valid=valid, path=path, channels=channels,
                 meta={"format": "tiff", "axes": series.axes})


def _name(value: object) -> str:
    """Name of a tifffile enum member, or the raw value for codes it does not know."""
    return getattr(value, "name", str(value))


def _tiff_layout(path: Path, axes: str) -> tuple[list[str], bool, bool]:
    """Axis order that makes a tifffile series channel-last ``(Z?, Y, X, C?)``.

    Samples (S) or channels (C) become the channel axis; one page axis (Z,
    or the generic I / Q of plain multi-page files) becomes the depth axis.
    """
    channel = [a for a in axes if a in "SC"]
    depth = [a for a in axes if a in "ZIQ"]
    others = [a for a in axes if a not in "SCZIQYX"]
    if "Y" not in axes or "X" not in axes or others or len(channel) > 1 or len(depth) > 1:
        raise ImageReadError(f"{path}: unsupported TIFF layout (axes {axes!r}); expected Y, X, "
                             f"at most one channel axis and one page axis")
    return depth + ["Y", "X"] + channel, bool(channel), bool(depth)


def _tiff_needs_pillow(page: tifffile.TiffPage) -> bool:
    """True for TIFF pages tifffile cannot turn into plain pixel values on its own."""
    if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
        return True  # palette, min-is-white, YCbCr, CMYK, ...
    if page.bitspersample < 8:
        return True
    if page.compression not in tifffile.TIFF.DECOMPRESSORS:
        return True  # e.g. LZW or JPEG without imagecodecs
    return page.predictor != 1 and page.predictor not in tifffile.TIFF.UNPREDICTORS


def _pillow_keeps_tiff_values(page: tifffile.TiffPage) -> bool:
    """Whether Pillow decodes this page without reducing its bit depth."""
    if page.bitspersample <= 8:
        return True
    if page.samplesperpixel != 1:
        return False
    fmt = tifffile.SAMPLEFORMAT
    # Pillow's single-channel modes: I;16 / I;16S (16-bit), I (int32), F (float32).
    return (page.bitspersample == 16 and page.sampleformat in (fmt.UINT, fmt.INT)) or (
        page.bitspersample == 32 and page.sampleformat in (fmt.INT, fmt.IEEEFP)
    )


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """View of channel-last `arr` turned upright as the EXIF/TIFF Orientation tag (1..8) asks."""
    y, x = arr.ndim - 3, arr.ndim - 2
    if orientation == 2:
        return np.flip(arr, x)
    if orientation == 3:
        return np.flip(arr, (y, x))
    if orientation == 4:
        return np.flip(arr, y)
    if orientation == 5:
        return np.swapaxes(arr, y, x)
    if orientation == 6:
        return np.rot90(arr, -1, axes=(y, x))
    if orientation == 7:
        return np.swapaxes(np.flip(arr, (y, x)), y, x)
    if orientation == 8:
        return np.rot90(arr, 1, axes=(y, x))
    return arr


def _read_npy(path: Path, max_pixels: int) -> Image:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ImageReadError(f"{path}: unsupported .npy format version {version}")
            # Checked from the header, before any data is read.
            if dtype.hasobject:
                raise ImageReadError(f"{path}: .npy holds an object array (dtype {dtype}), not an image")
            if dtype.kind not in "biuf":
                raise ImageReadError(f"{path}: .npy dtype {dtype} is not bool, integer or float")
            if len(shape) not in (2, 3):
                raise ImageReadError(
                    f"{path}: .npy array must be 2-D (H, W) or 3-D (H, W, C), got shape {shape}"
                )
            _check_pixels(path, shape[:2], max_pixels)
            if len(shape) == 3 and shape[2] == 0:
                raise ImageReadError(f"{path}: .npy array has no channels (shape {shape})")
            f.seek(0)
            arr = np.load(f, allow_pickle=False)
    except (ImageReadError, MemoryError):
        raise
    except Exception as err:
        raise ImageReadError(f"{path}: truncated or corrupt .npy file ({one_line(err, with_type=True)})") from err
    data = arr if arr.ndim == 3 else arr[..., np.newaxis]
    return Image(data=data, valid=_finite_mask(data), path=path,
                 channels=_default_channels(data.shape[-1], data.dtype), meta={"format": "npy"})

