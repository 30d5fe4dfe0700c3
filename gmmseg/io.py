"""Reading and writing image files.

This module owns every file format gmmseg reads or writes and the `Image`
container the rest of the package works on. It knows nothing about mixtures.

Readers turn a file into an `Image`: channel-last pixels in the dtype stored in
the file, plus a validity mask (alpha == 0, NaN and infinite pixels are
invalid). Every unreadable input raises `ImageReadError` with a one-line
message that names the file.

Writers are atomic: they write a hidden temporary file next to the target and
rename it into place, so an interrupted run never leaves a partial output, and
they refuse to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import stat
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from .errors import ImageReadError, OutputExistsError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "Image",
    "as_image",
    "atomic_output",
    "label_dtype",
    "read_image",
    "write_json",
    "write_npy",
    "write_png",
    "write_tiff",
]

logger = logging.getLogger(__name__)

#: Largest number of pixels (voxels for volumes) `read_image` decodes by default.
DEFAULT_MAX_PIXELS = 2**28

#: File suffixes `read_image` handles (lower case, with the dot).
SUPPORTED_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".npy", ".png", ".tif", ".tiff")

_READABLE = "readable formats: PNG, JPEG, BMP, TIFF, NumPy .npy"
_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "tiff": "TIFF", "npy": ".npy"}
# Pillow plugins allowed for each sniffed format; phone JPEGs often open as MPO.
_PILLOW_FORMATS = {"png": ["PNG"], "jpeg": ["JPEG", "MPO"], "bmp": ["BMP"], "tiff": ["TIFF"]}
# Enough leading bytes to see the NIfTI magic at offset 344.
_HEAD_BYTES = 352
_COMPOUND_SUFFIXES = (".nii.gz", ".ome.tiff", ".ome.tif")
_RGB = ("R", "G", "B")

# Pillow's decompression-bomb limit is process-wide and lower than ours, so it
# is switched off under this lock while Pillow decodes and `_check_pixels`
# applies our own limit to the header sizes instead.
_PILLOW_LIMIT_LOCK = threading.Lock()


@dataclass(eq=False)
class Image:
    """Pixels of one image or volume with a validity mask and file metadata.

    Parameters
    ----------
    data : (H, W, C) or (Z, H, W, C) ndarray
        Channel-last pixels in the dtype stored in the file (``uint8``,
        ``uint16``, ``int16``, ``float32``, ...); C = 1 for grey images.
    valid : (H, W) or (Z, H, W) ndarray of bool
        False for pixels to ignore (alpha == 0, NaN, nodata).
    path : Path, optional
        File the image was read from.
    spacing : tuple of float, optional
        Physical pixel size per spatial axis, in the order of
        ``data.shape[:-1]``; None means 1.0 along every axis.
    channels : tuple of str
        Channel names, e.g. ``("R", "G", "B")``, ``("gray",)`` or
        ``("band1", "band2", ...)``; empty when unknown.
    meta : dict
        Free-form details needed to write results back, at least
        ``{"format": ...}`` for images read from files.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.zeros((4, 5, 3), np.uint8), np.ones((4, 5), bool), channels=("R", "G", "B"))
    >>> img.spatial_shape, img.n_channels, img.is_rgb, img.n_valid
    ((4, 5), 3, True, 20)
    """

    data: np.ndarray
    valid: np.ndarray
    path: Path | None = None
    spacing: tuple[float, ...] | None = None
    channels: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.data, np.ndarray) or self.data.ndim not in (3, 4):
            got = self.data.shape if isinstance(self.data, np.ndarray) else type(self.data).__name__
            raise ValueError(f"data must be an (H, W, C) or (Z, H, W, C) ndarray, got {got}")
        if not isinstance(self.valid, np.ndarray) or self.valid.dtype != np.bool_:
            got = self.valid.dtype if isinstance(self.valid, np.ndarray) else type(self.valid).__name__
            raise TypeError(f"valid must be a bool ndarray, got {got}")
        if self.valid.shape != self.data.shape[:-1]:
            raise ValueError(
                f"valid must have shape {self.data.shape[:-1]} (data.shape[:-1]), got {self.valid.shape}"
            )
        if self.path is not None:
            self.path = Path(self.path)
        if self.spacing is not None:
            spacing = tuple(float(s) for s in self.spacing)
            if len(spacing) != self.data.ndim - 1 or not all(math.isfinite(s) and s > 0 for s in spacing):
                raise ValueError(
                    f"spacing must hold {self.data.ndim - 1} positive finite numbers, got {self.spacing}"
                )
            self.spacing = spacing
        self.channels = tuple(str(c) for c in self.channels)
        if self.channels and len(self.channels) != self.data.shape[-1]:
            raise ValueError(
                f"channels must name {self.data.shape[-1]} channels, "
                f"got {len(self.channels)}: {self.channels}"
            )

    def __repr__(self) -> str:
        return (
            f"Image(shape={self.data.shape}, dtype={self.data.dtype}, channels={self.channels}, "
            f"spacing={self.spacing}, path={str(self.path) if self.path else None!r})"
        )

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis: ``(H, W)`` or ``(Z, H, W)``."""
        return self.data.shape[:-1]

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions, 2 or 3."""
        return self.data.ndim - 1

    @property
    def n_channels(self) -> int:
        """Number of channels C."""
        return self.data.shape[-1]

    @property
    def is_volume(self) -> bool:
        """True for (Z, H, W, C) volumes."""
        return self.ndim == 3

    @property
    def is_rgb(self) -> bool:
        """True for 3 channels named R, G, B, or unnamed 3-channel 8/16-bit pixels."""
        if self.n_channels != 3:
            return False
        if self.channels:
            return self.channels == _RGB
        return self.data.dtype in (np.uint8, np.uint16)

    @property
    def n_valid(self) -> int:
        """Number of valid pixels."""
        return int(np.count_nonzero(self.valid))

    @property
    def name(self) -> str:
        """File name without its suffix (``scene`` for ``scene.nii.gz``), or ``"image"``."""
        return "image" if self.path is None else file_stem(self.path)


def file_stem(path: str | os.PathLike) -> str:
    """File name without its suffix, compound ones included (``scene`` for ``scene.nii.gz``)."""
    name = Path(path).name
    for suffix in _COMPOUND_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(path).stem or "image"


# --------------------------------------------------------------------------
# Conversions from arrays


def as_image(obj: Image | np.ndarray | str | os.PathLike, *, valid: np.ndarray | None = None) -> Image:
    """Return `obj` as an `Image`.

    Parameters
    ----------
    obj : Image, ndarray or path
        An `Image` (returned as is when `valid` is None); a ``(H, W)`` grey,
        ``(H, W, C)`` or ``(Z, H, W, C)`` array of a numeric dtype (not
        copied); or a file path, read with `read_image`.
    valid : (H, W) or (Z, H, W) ndarray of bool, optional
        Extra validity mask, combined with the image's own mask by AND.

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
        `obj` has another number of dimensions or no pixels, or `valid` has
        the wrong shape.
    ImageReadError
        `obj` is a path that cannot be read.

    Examples
    --------
    >>> import numpy as np
    >>> img = as_image(np.array([[0.0, np.nan], [1.0, 2.0]], np.float32))
    >>> img.data.shape, img.valid.tolist()
    ((2, 2, 1), [[True, False], [True, True]])
    """
    if isinstance(obj, Image):
        image = obj
    elif isinstance(obj, np.ndarray):
        image = _image_from_array(obj)
    elif isinstance(obj, (str, os.PathLike)):
        image = read_image(obj)
    else:
        raise TypeError(f"image must be an Image, an ndarray or a file path, got {type(obj).__name__}")
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


def _image_from_array(array: np.ndarray) -> Image:
    if array.dtype.kind not in "biuf":
        raise TypeError(f"image must have a bool, integer or float dtype, got {array.dtype}")
    if array.ndim == 2:
        data = array[..., np.newaxis]
    elif array.ndim in (3, 4):
        data = array
    else:
        raise ValueError(f"image must have shape (H, W), (H, W, C) or (Z, H, W, C), got shape {array.shape}")
    if data.size == 0:
        raise ValueError(f"image must have at least one pixel and one channel, got shape {array.shape}")
    return Image(
        data=data,
        valid=_finite_mask(data),
        channels=_default_channels(data.shape[-1], data.dtype),
        meta={"format": "ndarray"},
    )


def _finite_mask(data: np.ndarray) -> np.ndarray:
    """Pixels whose channels are all finite; all True for non-float data."""
    valid = np.ones(data.shape[:-1], dtype=bool)
    if data.dtype.kind == "f":
        # One channel at a time keeps the temporary at (H, W), not (H, W, C).
        for c in range(data.shape[-1]):
            valid &= np.isfinite(data[..., c])
    return valid


def _default_channels(n_channels: int, dtype: np.dtype) -> tuple[str, ...]:
    if n_channels == 1:
        return ("gray",)
    if n_channels == 3 and dtype in (np.uint8, np.uint16):
        return _RGB
    return tuple(f"band{i}" for i in range(1, n_channels + 1))


# --------------------------------------------------------------------------
# Reading


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Read a PNG, JPEG, BMP, TIFF or NumPy ``.npy`` file.

    The format is recognised from the file's content, not its suffix. The
    file is opened read-only.

    Parameters
    ----------
    path : str or path-like
        File to read.
    max_pixels : int, default `DEFAULT_MAX_PIXELS`
        Largest number of pixels (voxels for volumes) to decode; larger
        images are refused from their header, before decoding, to defeat
        decompression bombs.

    Returns
    -------
    Image
        ``data`` is ``(H, W, C)`` (``(Z, H, W, C)`` for multi-page TIFF
        stacks) in the stored dtype: 16-bit files stay ``uint16``, float TIFF
        and ``.npy`` stay float. Palette images become RGB; an alpha channel
        is removed from ``data`` and its zero pixels are invalid, as are
        pixels with a NaN or infinite value. The EXIF / TIFF orientation tag
        is applied. ``channels`` is ``("R", "G", "B")`` for colour,
        ``("gray",)`` for grey and ``("band1", ...)`` for other
        multi-channel data; ``meta["format"]`` is one of ``"png"``,
        ``"jpeg"``, ``"bmp"``, ``"tiff"``, ``"npy"``.

    Raises
    ------
    ImageReadError
        The file is missing, a directory, empty, not an image of a readable
        format, truncated or corrupt, has no pixels or more than
        `max_pixels`, or is an ``.npy`` array that is not 2-D or 3-D numeric.
        The one-line message names the file.

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
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise TypeError(f"max_pixels must be an integer, got {type(max_pixels).__name__}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    path = Path(path)
    head = _read_head(path)
    kind = _sniff(head)
    if kind == "gzip" and path.name.lower().endswith(".nii.gz"):
        kind = "NIfTI"
    if kind in _UNSUPPORTED_KINDS:
        raise ImageReadError(f"{path}: unsupported format {kind}; {_READABLE}")
    if kind is None:
        raise ImageReadError(f"{path}: not a supported image file (unrecognised content); {_READABLE}")
    if kind == "npy":
        image = _read_npy(path, max_pixels)
    elif kind == "tiff":
        image = _read_tiff(path, max_pixels)
    elif kind == "png" and _is_16bit_colour_png(head):
        image = _read_png_16bit_colour(path, head, max_pixels)
    else:
        image = _read_pillow(path, kind, max_pixels)
    logger.debug("read %s: %s", path, image)
    return image


def _read_head(path: Path) -> bytes:
    """Check that `path` is a readable, non-empty file and return its first bytes."""
    try:
        st = path.stat()
    except FileNotFoundError as err:
        raise ImageReadError(f"{path}: file not found") from err
    except OSError as err:
        raise ImageReadError(f"{path}: cannot access file ({_one_line(err)})") from err
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
        raise ImageReadError(f"{path}: cannot open file ({_one_line(err)})") from err


def _sniff(head: bytes) -> str | None:
    """Format of a file from its first bytes: a reader key, a name from `_UNSUPPORTED_KINDS`, or None."""
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
    if head[128:132] == b"DICM":
        return "DICOM"
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[:4] == b"\x5c\x01\x00\x00":
        return "NIfTI"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"PK\x03\x04"):
        return "zip (.npz?)"
    return None


_UNSUPPORTED_KINDS = ("DICOM", "NIfTI", "gzip", "GIF", "WebP", "zip (.npz?)")


def _one_line(err: BaseException) -> str:
    """Exception text on one line, prefixed with its type."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _check_pixels(path: Path, spatial_shape: tuple[int, ...], max_pixels: int) -> None:
    """Refuse empty images and images larger than `max_pixels`, from header sizes."""
    n_pixels = math.prod(int(s) for s in spatial_shape)
    if n_pixels == 0:
        raise ImageReadError(f"{path}: image has no pixels (shape {tuple(spatial_shape)})")
    if n_pixels > max_pixels:
        raise ImageReadError(
            f"{path}: image has {n_pixels} pixels (shape {tuple(spatial_shape)}), more than "
            f"max_pixels={max_pixels}; refusing to decode a possible decompression bomb"
        )


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
            raise ImageReadError(f"{path}: not a readable {fmt} image ({_one_line(err)})") from err
        except Exception as err:
            raise ImageReadError(f"{path}: truncated or corrupt {fmt} file ({_one_line(err)})") from err
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
        raise ImageReadError(f"{path}: truncated or corrupt PNG file ({_one_line(err)})") from err
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
                    f"{_name(page.photometric)}, {page.bitspersample}-bit, {len(tif.pages)} page(s)){hint}"
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
        raise ImageReadError(f"{path}: truncated or corrupt TIFF file ({_one_line(err)})") from err
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
        raise ImageReadError(f"{path}: truncated or corrupt .npy file ({_one_line(err)})") from err
    data = arr if arr.ndim == 3 else arr[..., np.newaxis]
    return Image(data=data, valid=_finite_mask(data), path=path,
                 channels=_default_channels(data.shape[-1], data.dtype), meta={"format": "npy"})


# --------------------------------------------------------------------------
# Writing


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Context manager that yields a temporary path and moves it to `path` on success.

    The temporary file ``.{name}.tmp-XXXXXXXX`` is created (empty) in the
    directory of `path`, so the final rename stays on one file system. If the
    block raises, the temporary file is deleted and `path` is untouched.

    Parameters
    ----------
    path : str or path-like
        Final output file; its directory must exist.
    overwrite : bool, default False
        Replace an existing `path`. Without it an existing file raises
        `OutputExistsError`, checked both before the block runs and when the
        result is moved into place.

    Yields
    ------
    Path
        Temporary file to write to (it exists, empty, with the permissions a
        new file gets).

    Raises
    ------
    OutputExistsError
        `path` exists and `overwrite` is False.
    FileNotFoundError
        The directory of `path` does not exist.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_output(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path}: output file exists (use overwrite to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: output directory does not exist")
    tmp = _create_temp(path)
    try:
        yield tmp
        _move_into_place(tmp, path, overwrite=overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def _create_temp(path: Path) -> Path:
    for _ in range(100):
        tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
        try:
            # Mode 0o666 lets the umask decide, as for any new file (mkstemp would force 0o600).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path}: could not create a unique temporary file next to it")


def _move_into_place(tmp: Path, path: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        # A hard link fails if `path` appeared meanwhile, where a rename would replace it.
        os.link(tmp, path)
    except FileExistsError as err:
        raise OutputExistsError(f"{path}: output file exists (use overwrite to replace it)") from err
    except OSError:
        # File systems without hard links (FAT, some network shares).
        if os.path.lexists(path):
            raise OutputExistsError(f"{path}: output file exists (use overwrite to replace it)") from None
        os.replace(tmp, path)


def write_png(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = False) -> None:
    """Write a grey, RGB or RGBA array as an 8- or 16-bit PNG, atomically.

    Parameters
    ----------
    path : str or path-like
        Output file.
    array : (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) ndarray of uint8 or uint16
        Grey, RGB or RGBA pixels (channel order R, G, B, A).
    overwrite : bool, default False
        Replace an existing file; otherwise raise `OutputExistsError`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> out = Path(tempfile.mkdtemp()) / "labels.png"
    >>> write_png(out, np.array([[0, 1], [2, 3]], np.uint8))
    >>> read_image(out).data[..., 0].tolist()
    [[0, 1], [2, 3]]
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array must be an ndarray, got {type(array).__name__}")
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"array must have dtype uint8 or uint16 for PNG, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))) or array.size == 0:
        raise ValueError(
            f"array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        pixels = array[..., 0]
    elif array.ndim == 3:
        # OpenCV stores colour as BGR(A).
        code = cv2.COLOR_RGB2BGR if array.shape[-1] == 3 else cv2.COLOR_RGBA2BGRA
        pixels = cv2.cvtColor(np.ascontiguousarray(array), code)
    else:
        pixels = array
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(pixels))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed for an array of shape {array.shape}")
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(encoded.data)


def write_npy(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = False) -> None:
    """Write an array to a NumPy ``.npy`` file, atomically and without pickle.

    Parameters
    ----------
    path : str or path-like
        Output file (written as named; no ``.npy`` suffix is added).
    array : ndarray
        Any non-object array.
    overwrite : bool, default False
        Replace an existing file; otherwise raise `OutputExistsError`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> out = Path(tempfile.mkdtemp()) / "proba.npy"
    >>> write_npy(out, np.zeros((2, 2), np.float32))
    >>> np.load(out).shape
    (2, 2)
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array must be an ndarray, got {type(array).__name__}")
    if array.dtype.hasobject:
        raise TypeError(f"array must not have an object dtype, got {array.dtype}")
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def write_json(path: str | os.PathLike, obj: object, *, overwrite: bool = False) -> None:
    """Write `obj` as indented UTF-8 JSON, atomically.

    NumPy scalars and arrays become numbers and lists, paths become strings.
    Non-finite floats are written as ``NaN`` / ``Infinity``, as Python's
    `json` does.

    Parameters
    ----------
    path : str or path-like
        Output file.
    obj : object
        JSON-serialisable data, possibly holding NumPy values.
    overwrite : bool, default False
        Replace an existing file; otherwise raise `OutputExistsError`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> out = Path(tempfile.mkdtemp()) / "report.json"
    >>> write_json(out, {"weights": np.array([0.25, 0.75]), "k": np.int64(2)})
    >>> json.loads(out.read_text())
    {'weights': [0.25, 0.75], 'k': 2}
    """
    text = json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False) + "\n"
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(obj: object) -> object:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_tiff(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = False) -> None:
    """Write an array of any numeric dtype as a TIFF, atomically.

    Meant for float maps (probabilities, log-likelihoods). Channels are
    stored as samples of one page, volumes as one page per slice, so
    `read_image` gives back the same array.

    Parameters
    ----------
    path : str or path-like
        Output file.
    array : (H, W), (H, W, C) or (Z, H, W, C) ndarray
        Pixels, channel-last.
    overwrite : bool, default False
        Replace an existing file; otherwise raise `OutputExistsError`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> out = Path(tempfile.mkdtemp()) / "proba.tif"
    >>> write_tiff(out, np.full((2, 3, 4), 0.25, np.float32))
    >>> read_image(out).data.shape
    (2, 3, 4)
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array must be an ndarray, got {type(array).__name__}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"array must have a bool, integer or float dtype, got {array.dtype}")
    if array.ndim not in (2, 3, 4) or array.size == 0:
        raise ValueError(f"array must have shape (H, W), (H, W, C) or (Z, H, W, C), got {array.shape}")
    planarconfig = "contig" if array.ndim >= 3 else None
    with atomic_output(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, array, photometric="minisblack", planarconfig=planarconfig)


def label_dtype(n_components: int) -> type[np.unsignedinteger]:
    """Smallest unsigned dtype for a label map with `n_components` segments.

    ``np.uint8`` for up to 255 components, ``np.uint16`` up to 65535, as the
    design fixes for label files.

    Examples
    --------
    >>> label_dtype(4), label_dtype(300)
    (<class 'numpy.uint8'>, <class 'numpy.uint16'>)
    """
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
        raise TypeError(f"n_components must be an integer, got {type(n_components).__name__}")
    if not 1 <= n_components <= 65535:
        raise ValueError(f"n_components must be between 1 and 65535, got {n_components}")
    return np.uint8 if n_components <= 255 else np.uint16


# --------------------------------------------------------------------------
# Result maps written in the input's geometry

def result_suffix(image: Image, kind: str) -> str:
    """File suffix for a result map of ``image``.

    ``kind`` is ``"labels"`` (integer label map) or ``"float"`` (probability
    or log-likelihood maps).  2-D photos get PNG label maps; volumes and all
    float maps get TIFF.
    """
    if kind not in ("labels", "float"):
        raise ValueError(f"kind must be 'labels' or 'float', got {kind!r}")
    if kind == "labels" and image.ndim == 2:
        return ".png"
    return ".tif"


def write_result_map(path: str | os.PathLike, array: np.ndarray, image: Image, *,
                     n_components: int | None = None, overwrite: bool = False) -> None:
    """Write a per-pixel result of ``image`` so that it lines up with the input.

    Parameters
    ----------
    path : path
        Target file; its suffix should come from :func:`result_suffix`.
    array : ndarray of shape ``image.spatial_shape`` or ``image.spatial_shape + (K,)``
        Either a label map (``n_components`` given; int, 0..K-1, -1 where
        invalid) or a float map (probabilities, log-likelihood; NaN or 0
        where invalid).
    image : Image
        The segmented input, whose format and geometry the output follows.
    n_components : int, optional
        Marks ``array`` as a label map with this many segments.  Label files
        are uint8 (uint16 when K > 255); invalid pixels are written as 0 in
        PNG and TIFF label maps (the report's valid share and the overlay show
        where they are).
    """
    array = np.asarray(array)
    if array.shape[: image.ndim] != image.spatial_shape:
        raise ValueError(
            f"array of shape {array.shape} does not match the image's {image.spatial_shape}")
    if n_components is not None:
        array = np.where(array >= 0, array, 0).astype(label_dtype(n_components))
    if Path(path).suffix.lower() == ".png":
        write_png(path, array, overwrite=overwrite)
    else:
        write_tiff(path, array, overwrite=overwrite)
