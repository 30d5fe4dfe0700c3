"""The `Image` container and helpers shared by every reader and writer."""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from ..errors import ImageReadError, counted

logger = logging.getLogger("gmmseg.io")

#: Largest number of pixels (voxels for volumes) `read_image` decodes by default.
DEFAULT_MAX_PIXELS = 2**28

_COMPOUND_SUFFIXES = (".nii.gz", ".ome.tiff", ".ome.tif")
_RGB = ("R", "G", "B")

# Optional packages: import name -> the pip extra that installs it.
_EXTRAS = {
    "pydicom": "medical",
    "nibabel": "medical",
    "rasterio": "geo",
}


@dataclass(eq=False)
class Image:
    """Pixels of one image or volume with a validity mask and file metadata.

    Parameters
    ----------
    data : (H, W, C) or (Z, H, W, C) ndarray
        Channel-last pixels in the dtype stored in the file (``uint8``,
        ``uint16``, ``int16``, ``float32``, ...); C = 1 for grey images and
        medical volumes, C = number of bands for rasters. Volumes are
        slice, row, column (see `gmmseg.io.medical` for how NIfTI and DICOM
        axes map to them).
    valid : (H, W) or (Z, H, W) ndarray of bool
        False for pixels to ignore (alpha == 0, NaN, nodata).
    path : Path, optional
        File the image was read from.
    spacing : tuple of float, optional
        Physical pixel size per spatial axis, in the order of
        ``data.shape[:-1]``: ``(z, y, x)`` voxel size in mm for volumes,
        ``(y, x)`` pixel size in CRS units for georeferenced rasters; None
        means 1.0 along every axis.
    channels : tuple of str
        Channel names, e.g. ``("R", "G", "B")``, ``("gray",)`` or
        ``("band1", "band2", ...)``; empty when unknown.
    meta : dict
        Free-form details needed to write results back, at least
        ``{"format": ...}`` for images read from files. NIfTI and DICOM
        images carry ``"affine"`` (4x4 NIfTI affine, RAS mm, of the voxel
        index ``(column, row, slice)``); rasters read through rasterio carry
        ``"reader": "rasterio"``, ``"crs"`` (WKT), ``"crs_name"``,
        ``"transform"``, ``"nodata"``, ``"dtype"``, ``"bands"`` and
        ``"descriptions"``.

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
                f"channels must name {counted(self.data.shape[-1], 'channel')}, "
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
    def is_photo(self) -> bool:
        """A 2-D RGB picture, not a georeferenced scene: what gets photo defaults.

        Photo defaults (position in the features, connected regions in the
        outputs) suit scenes of compact objects; RGB rasters read by
        rasterio and RGB volumes do not get them.
        """
        return self.is_rgb and self.ndim == 2 and self.meta.get("reader") != "rasterio"

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


def real_path(path: str | os.PathLike) -> Path:
    """``path`` absolute, with symbolic links resolved as far as they go.

    Unlike ``Path.resolve`` on Python < 3.13, a symbolic-link loop raises
    nothing: the looping part stays as it is, and whoever opens the path gets
    the ``OSError`` (and reports it for that one file).
    """
    return Path(os.path.realpath(os.path.abspath(path)))


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



def require(module: str, *, what: str, path: str | os.PathLike | None = None,
            error: type[Exception] = ImageReadError) -> ModuleType:
    """Import an optional dependency or raise a one-line error with the install command.

    Parameters
    ----------
    module : str
        Import name, one of ``pydicom``, ``nibabel``, ``rasterio``.
    what : str
        What needs it, e.g. ``"reading DICOM"``.
    path : path-like, optional
        File the error message names.
    error : exception class, default `ImageReadError`
        Raised when the import fails.

    Examples
    --------
    >>> require("numpy", what="anything").__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = _EXTRAS.get(module, "all")
        where = f"{path}: " if path is not None else ""
        raise error(
            f"{where}{what} needs {module}; install it with: pip install 'gmmseg[{extra}]'"
        ) from err


# Expected for plain rasters without georeferencing: logged at debug level only.
_QUIET_WARNINGS = ("NotGeoreferencedWarning",)


@contextlib.contextmanager
def logged_warnings(path: Path) -> Iterator[None]:
    """Turn warnings raised inside the block (by pydicom, nibabel, GDAL) into log records.

    Third-party readers warn about harmless oddities of real files; gmmseg
    reports them once through `logging`, prefixed with the file, instead of
    letting them escape as Python warnings (which strict callers turn into
    errors).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = " ".join(str(w.message).split())
                if text in seen:
                    continue
                seen.add(text)
                level = logging.DEBUG if w.category.__name__ in _QUIET_WARNINGS else logging.WARNING
                logger.log(level, "%s: %s", path, text)
