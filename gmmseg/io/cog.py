"""Tiled GeoTIFFs written window by window; label maps finished as cloud-optimised GeoTIFF.

Owns :class:`TiledGeoTIFF`: a result map of an image too large for memory,
written one window at a time into a tiled, compressed GeoTIFF under a
temporary name, then finished and renamed into place (never a
half-written file under the final name):

- label maps become a cloud-optimised GeoTIFF (GDAL's ``COG`` driver):
  512 x 512 tiles, deflate, overviews built with *mode* resampling (the
  most frequent label of each block, so no label that does not occur is
  invented), the input's CRS, transform and nodata, and a colour table
  with the overlay's colours (QGIS shows the segments in them at once);
- float maps (probabilities, log-likelihood) stay a tiled float32 GeoTIFF
  (deflate with the floating-point predictor), NaN nodata.

Needs rasterio (the ``geo`` extra).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..errors import GmmsegError
from .image import logged_warnings, require
from .writers import _create_temp, atomic_output

#: Tile side of written maps: GDAL's COG default, and a multiple of every
#: power-of-two block the readers align windows to.
TILE = 512
#: Overviews down to this size on the longest side (GDAL stops there too).
SMALLEST_OVERVIEW = 256


def geotiff_profile(meta: dict, shape: tuple[int, int], count: int, dtype, nodata) -> dict:
    """A tiled GeoTIFF profile in the geometry ``meta`` describes (CRS, transform or GCPs)."""
    dtype = np.dtype(dtype)
    profile = {"driver": "GTiff", "height": shape[0], "width": shape[1], "count": count,
               "dtype": dtype.name, "nodata": nodata, "tiled": True, "blockxsize": TILE,
               "blockysize": TILE, "compress": "deflate", "BIGTIFF": "IF_SAFER",
               "predictor": 3 if dtype.kind == "f" else 2}
    if count > 1:
        profile["interleave"] = "band"
    if meta.get("crs") is not None:
        profile["crs"] = meta["crs"]
    transform = meta.get("transform")
    if transform is not None and not transform.is_identity:
        profile["transform"] = transform
    elif meta.get("gcps"):
        gcps, gcp_crs = meta["gcps"]
        profile["gcps"] = gcps
        profile["crs"] = gcp_crs
    return profile


class TiledGeoTIFF:
    """A GeoTIFF written window by window, renamed into place by :meth:`finish`.

    Parameters
    ----------
    path : path
        Final file name.
    meta : dict
        The input's ``Image.meta`` (``crs``, ``transform`` or ``gcps``).
    shape : (H, W)
    count : int
        Bands (1 for labels and log-likelihood, K for probabilities).
    dtype : numpy dtype
    nodata : number
    colors : (n, 3) int array, optional
        Colour table of a label map (value k gets row k; nodata transparent).
    descriptions : sequence of str, optional
        One per band.
    cog : bool
        Finish as a cloud-optimised GeoTIFF with mode overviews (label maps).
    overwrite : bool

    Examples
    --------
    >>> import tempfile
    >>> from affine import Affine
    >>> path = Path(tempfile.mkdtemp()) / "labels.tif"
    >>> meta = {"crs": "EPSG:32633", "transform": Affine(10, 0, 500000, 0, -10, 6000000)}
    >>> with TiledGeoTIFF(path, meta, (600, 700), 1, np.uint8, 255, cog=True) as out:
    ...     out.write(((0, 600), (0, 700)), np.zeros((600, 700), np.uint8))
    >>> import rasterio
    >>> with rasterio.open(path) as ds:
    ...     ds.block_shapes[0], ds.overviews(1)
    ((512, 512), [2])
    """

    def __init__(self, path, meta, shape, count, dtype, nodata, *, colors=None,
                 descriptions=None, cog=False, overwrite=False):
        self.rasterio = require("rasterio", what="writing GeoTIFF", path=path, error=GmmsegError)
        self.path = Path(path)
        self.cog = cog
        self._stack = contextlib.ExitStack()
        self._final_tmp = self._stack.enter_context(atomic_output(self.path, overwrite=overwrite))
        # The COG driver copies a finished file; the windows go into a plain one first.
        self._tmp = self._final_tmp
        if cog:
            self._tmp = _create_temp(self.path)
            self._stack.callback(self._tmp.unlink, missing_ok=True)
        self._env = self.rasterio.Env(GDAL_PAM_ENABLED="NO")
        self._env.__enter__()
        profile = geotiff_profile(meta, shape, count, dtype, nodata)
        try:
            with logged_warnings(self.path):
                self._ds = self.rasterio.open(self._tmp, "w", **profile)
            for i, text in enumerate(descriptions or (), start=1):
                self._ds.set_band_description(i, text)
            if colors is not None:
                table = {k: (*(int(c) for c in rgb), 255) for k, rgb in enumerate(colors)}
                table[int(nodata)] = (0, 0, 0, 0)
                self._ds.write_colormap(1, table)
        except BaseException:
            self.abort()
            raise

    def write(self, region, array: np.ndarray) -> None:
        """Write ``array`` (``(h, w)`` or ``(h, w, count)``) at ``region`` ``((r0, r1), (c0, c1))``."""
        from rasterio.windows import Window

        (r0, r1), (c0, c1) = region
        bands = array[np.newaxis] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        self._ds.write(np.ascontiguousarray(bands), window=Window(c0, r0, c1 - c0, r1 - r0))

    def finish(self) -> Path:
        """Close, build the COG (overviews with mode resampling) if asked, rename into place."""
        try:
            self._ds.close()
            if self.cog:
                from rasterio.shutil import copy

                with logged_warnings(self.path):
                    copy(self._tmp, self._final_tmp, driver="COG", COMPRESS="DEFLATE",
                         PREDICTOR="YES", BLOCKSIZE=TILE, RESAMPLING="MODE",
                         OVERVIEW_RESAMPLING="MODE", OVERVIEWS="IGNORE_EXISTING",
                         BIGTIFF="IF_SAFER", NUM_THREADS=1)
        except BaseException:
            self.abort()
            raise
        self._env.__exit__(None, None, None)
        self._stack.close()
        return self.path

    def abort(self) -> None:
        """Drop the temporary files; nothing is left under the final name."""
        with contextlib.suppress(Exception):
            self._ds.close()
        self._env.__exit__(None, None, None)
        self._stack.__exit__(GmmsegError, GmmsegError("aborted"), None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.finish()
        else:
            self.abort()

