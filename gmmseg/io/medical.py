"""DICOM and NIfTI: volumes with their geometry in, NIfTI results out.

Needs the ``medical`` extra (pydicom, nibabel); without it the readers fail
with a one-line error that gives the install command.

Axis convention
---------------
gmmseg volumes are ``(Z, H, W, C)``: slice, row, column, channel, and
``Image.spacing`` is ``(z, y, x)`` in millimetres in the same order.

- NIfTI arrays are indexed ``(i, j, k)`` (x fastest). gmmseg stores
  ``data[k, j, i] = nifti[i, j, k]``: the NIfTI array transposed, without
  any resampling or reorientation, so voxel ``(k, j, i)`` of the `Image` is
  voxel ``(i, j, k)`` of the file and ``spacing = (dz, dy, dx)`` are the
  file's zooms reversed. Writers apply the inverse transpose, so a result
  volume lines up with its input voxel for voxel.
- DICOM slices become ``data[k]`` in increasing position along the slice
  normal (``row direction x column direction`` of ImageOrientationPatient),
  whatever the file names or InstanceNumbers; rows and columns stay as
  stored. ``spacing = (slice distance, row spacing, column spacing)``.

``meta["affine"]`` is the 4x4 NIfTI affine (RAS+ millimetres) that maps the
NIfTI voxel index ``(i, j, k) = (column, row, slice)`` to the patient: for
NIfTI inputs the file's own affine, for DICOM the one computed from
ImagePositionPatient, ImageOrientationPatient and PixelSpacing (DICOM's LPS
turned into RAS), as dcm2niix and nibabel do. Writing a label map with it
makes the label volume overlay the input in FSLeyes, ITK-SNAP or 3D Slicer.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import math
import os
import re
from pathlib import Path

import numpy as np

from ..errors import GmmsegError, ImageReadError, counted, one_line
from .image import (
    _RGB,
    Image,
    _check_pixels,
    _finite_mask,
    logged_warnings,
    require,
)
from .writers import atomic_output

logger = logging.getLogger("gmmseg.io")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Install hints for compressed DICOM transfer syntaxes pydicom decodes only with plugins.
_JPEG_HINT = "pip install pylibjpeg pylibjpeg-libjpeg (or: pip install python-gdcm)"
_J2K_HINT = "pip install pylibjpeg pylibjpeg-openjpeg (or: pip install python-gdcm)"
_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": _JPEG_HINT,
    "1.2.840.10008.1.2.4.51": _JPEG_HINT,
    "1.2.840.10008.1.2.4.57": _JPEG_HINT,
    "1.2.840.10008.1.2.4.70": _JPEG_HINT,
    "1.2.840.10008.1.2.4.80": _JPEG_HINT,
    "1.2.840.10008.1.2.4.81": _JPEG_HINT,
    "1.2.840.10008.1.2.4.90": _J2K_HINT,
    "1.2.840.10008.1.2.4.91": _J2K_HINT,
    "1.2.840.10008.1.2.4.201": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pip install pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pip install pylibjpeg pylibjpeg-rle",
}
_DEFAULT_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or: pip install python-gdcm)"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# A folder read as an image is a DICOM series; said when it is not one, in the
# API's words (the CLI says ``gmmseg batch``).
FOLDER_HINT = "for a folder of image files, use gmmseg.batch.find_inputs and run_batch"

# nibabel reports header problems to a logger; the faults we refuse become the
# error message, and the minor ones it fixes are not worth a line.
_HEADER_CHECKS = logging.getLogger("gmmseg.io.nifti_header_checks")
_HEADER_CHECKS.addHandler(logging.NullHandler())
_HEADER_CHECKS.propagate = False


class _NotAnImage(ImageReadError):
    """A DICOM file without Rows / Columns: skipped inside a series folder."""


# --------------------------------------------------------------------------
# DICOM


@dataclasses.dataclass
class _Frame:
    """Geometry and rescale of one DICOM frame (a slice), read from the header."""

    source: Path
    index: int | None  # frame number in a multi-frame file, None for single-frame files
    rows: int
    columns: int
    samples: int
    position: np.ndarray | None  # ImagePositionPatient (3,), LPS mm
    orientation: np.ndarray | None  # ImageOrientationPatient (6,)
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns)
    slice_spacing: float | None  # SpacingBetweenSlices, else SliceThickness
    slope: float
    intercept: float
    instance: int


def _floats(value: object, n: int) -> np.ndarray | None:
    """`value` (a DICOM multi-value DS) as n finite floats, or None."""
    if value is None:
        return None
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _number(value: object) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _group_value(ds, index: int | None, sequence: str, keyword: str) -> object:
    """A value from the per-frame or shared functional groups (enhanced DICOM), else the top level."""
    groups = []
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if index is not None and per_frame is not None and index < len(per_frame):
        groups.append(per_frame[index])
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if shared:
        groups.append(shared[0])
    for group in groups:
        items = getattr(group, sequence, None)
        if items and keyword in items[0]:
            return getattr(items[0], keyword)
    return getattr(ds, keyword, None)


def _frames_of(ds, source: Path) -> list[_Frame]:
    """One `_Frame` per frame of a dataset read with or without its pixels."""
    n_frames = int(_number(getattr(ds, "NumberOfFrames", 1)) or 1)
    frames = []
    for f in range(n_frames):
        index = f if n_frames > 1 else None
        spacing = _floats(_group_value(ds, index, "PixelMeasuresSequence", "PixelSpacing"), 2)
        slice_spacing = None
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = _number(_group_value(ds, index, "PixelMeasuresSequence", keyword))
            if value is not None and value > 0:
                slice_spacing = value
                break
        slope = _number(_group_value(ds, index, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _number(
            _group_value(ds, index, "PixelValueTransformationSequence", "RescaleIntercept"))
        frames.append(_Frame(
            source=source,
            index=index,
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples=int(_number(getattr(ds, "SamplesPerPixel", 1)) or 1),
            position=_floats(_group_value(ds, index, "PlanePositionSequence", "ImagePositionPatient"), 3),
            orientation=_floats(
                _group_value(ds, index, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
            pixel_spacing=(float(spacing[0]), float(spacing[1]))
            if spacing is not None and np.all(spacing > 0) else None,
            slice_spacing=slice_spacing,
            slope=1.0 if slope is None or slope == 0 else slope,
            intercept=0.0 if intercept is None else intercept,
            instance=int(_number(getattr(ds, "InstanceNumber", 0)) or 0),
        ))
    return frames


@dataclasses.dataclass
class _Geometry:
    order: list[int]  # frames in increasing position along the slice normal
    spacing: tuple[float, ...]  # (z, y, x), or (y, x) for one slice
    affine: np.ndarray  # 4x4 NIfTI affine, RAS
    exact: bool  # False when positions or orientation were missing


def _geometry(path: Path, frames: list[_Frame]) -> _Geometry:
    """Slice order, spacing and affine of a stack of frames, checked for consistency."""
    first = frames[0]
    for fr in frames[1:]:
        if (fr.rows, fr.columns, fr.samples) != (first.rows, first.columns, first.samples):
            raise ImageReadError(
                f"{path}: DICOM images differ in size ({first.rows} x {first.columns} in "
                f"{first.source.name}, {fr.rows} x {fr.columns} in {fr.source.name}); "
                "not one volume")
    dy, dx = first.pixel_spacing or (1.0, 1.0)
    n = len(frames)
    have_geometry = all(fr.position is not None and fr.orientation is not None for fr in frames)
    if not have_geometry:
        order = sorted(range(n), key=lambda i: (frames[i].instance, str(frames[i].source), i))
        dz = first.slice_spacing or 1.0
        logger.warning("%s: no ImagePositionPatient / ImageOrientationPatient; slices ordered "
                       "by InstanceNumber and the written geometry is approximate", path)
        lps = np.diag([dx, dy, dz, 1.0])
        return _Geometry(order, (dz, dy, dx) if n > 1 else (dy, dx), _LPS_TO_RAS @ lps, False)
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    for fr in frames[1:]:
        if not np.allclose(fr.orientation, first.orientation, atol=1e-4):
            raise ImageReadError(
                f"{path}: DICOM images have different orientations ({first.source.name}, "
                f"{fr.source.name}); not one volume")
        if fr.pixel_spacing != first.pixel_spacing:
            raise ImageReadError(
                f"{path}: DICOM images have different pixel spacings ({first.pixel_spacing} in "
                f"{first.source.name}, {fr.pixel_spacing} in {fr.source.name}); not one volume")
    normal = np.cross(row_dir, col_dir)
    distance = np.array([float(fr.position @ normal) for fr in frames])
    order = sorted(range(n), key=lambda i: (distance[i], i))
    if n > 1:
        steps = np.diff(distance[order])
        # Below a micrometre two images share a position: echoes, phases or time points.
        if np.any(steps < 1e-3):
            n_positions = int(np.count_nonzero(steps >= 1e-3)) + 1
            raise ImageReadError(
                f"{path}: {n} DICOM images at only {n_positions} distinct slice positions "
                "(several echoes, phases or time points?); put one volume's images in a folder")
        dz = float(distance[order[-1]] - distance[order[0]]) / (n - 1)
        if np.max(np.abs(steps - dz)) > 0.01 * dz + 1e-4:
            logger.warning("%s: slice distances vary from %.4g to %.4g mm (a missing slice?); "
                           "using the mean %.4g mm", path, steps.min(), steps.max(), dz)
        slice_vector = (frames[order[-1]].position - frames[order[0]].position) / (n - 1)
        spacing = (dz, dy, dx)
    else:
        dz = first.slice_spacing or 1.0
        slice_vector = normal * dz
        spacing = (dy, dx)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dx  # i: along a row, the column index grows
    lps[:3, 1] = col_dir * dy  # j: down a column, the row index grows
    lps[:3, 2] = slice_vector  # k: slice to slice
    lps[:3, 3] = frames[order[0]].position
    return _Geometry(order, spacing, _LPS_TO_RAS @ lps, True)


def _dicom_decoder_available(pydicom, transfer_syntax) -> bool:
    """Whether pydicom can decode pixel data of this transfer syntax with what is installed."""
    try:
        from pydicom.pixels import get_decoder  # pydicom >= 3
    except ImportError:
        handlers = pydicom.config.pixel_data_handlers
        return any(h.is_available() and h.supports_transfer_syntax(transfer_syntax) for h in handlers)
    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def _transfer_syntax(ds):
    meta = getattr(ds, "file_meta", None)
    return getattr(meta, "TransferSyntaxUID", None) if meta is not None else None


def _decode(path: Path, ds, pydicom) -> np.ndarray:
    """Stored pixel values of a dataset: ``(rows, cols[, samples])`` or ``(frames, rows, cols[, samples])``."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        sop = getattr(getattr(ds, "SOPClassUID", None), "name", None)
        raise ImageReadError(f"{path}: DICOM file holds no pixel data"
                             + (f" ({sop})" if sop else "") + "; not an image")
    ts = _transfer_syntax(ds)
    if ts is None:
        # Files without a preamble and file meta: take the encoding they were read with.
        implicit, little = getattr(ds, "original_encoding", (True, True))
        uid = pydicom.uid
        ts = (uid.ImplicitVRLittleEndian if implicit else
              uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian)
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
    if ts.is_compressed and not _dicom_decoder_available(pydicom, ts):
        hint = _DECODER_HINTS.get(str(ts), _DEFAULT_HINT)
        raise ImageReadError(
            f"{path}: DICOM pixel data is compressed ({ts.name}) and pydicom cannot decode it "
            f"without an extra package; install one with: {hint}")
    try:
        arr = ds.pixel_array
    except MemoryError:
        raise
    except Exception as err:
        what = f"compressed ({ts.name}) " if ts.is_compressed else ""
        raise ImageReadError(
            f"{path}: cannot decode the {what}DICOM pixel data, truncated or corrupt file "
            f"({_decoder_failure(err)})") from err
    return np.asarray(arr)


# What pydicom says when every decoder plugin failed, before it lists them.
_ALL_PLUGINS_FAILED = re.compile(r"^RuntimeError: Unable to decode as exceptions were raised by "
                                 r"all available plugins: ")
# "<_io.BytesIO object at 0x7f...>": a memory address that says nothing to the user.
_OBJECT_REPR = re.compile(r" ?<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _decoder_failure(err: BaseException) -> str:
    """pydicom's decoding error in one line: each plugin and its reason, no object reprs.

    Examples
    --------
    >>> _decoder_failure(RuntimeError("Unable to decode as exceptions were raised by all "
    ...     "available plugins:\\n  pillow: cannot identify image file <_io.BytesIO object at 0x7f1>"))
    'pillow: cannot identify image file'
    """
    text = _ALL_PLUGINS_FAILED.sub("", one_line(err, with_type=True))
    return _OBJECT_REPR.sub("", text)


def _dcmread(pydicom, path: Path, *, stop_before_pixels: bool = False):
    """Parse a DICOM file; a file without the 'DICM' preamble is parsed as raw data set."""
    with open(path, "rb") as f:
        head = f.read(132)
    force = head[128:132] != b"DICM"
    try:
        ds = pydicom.dcmread(path, force=force, stop_before_pixels=stop_before_pixels)
        # Touch the attributes every reader needs, so parse errors surface here.
        int(ds.Rows), int(ds.Columns)
    except (AttributeError, KeyError) as err:
        raise _NotAnImage(f"{path}: truncated or corrupt DICOM file, or not an image (no Rows / "
                          "Columns)") from err
    except MemoryError:
        raise
    except Exception as err:
        raise ImageReadError(f"{path}: truncated or corrupt DICOM file ({one_line(err, with_type=True)})") from err
    return ds


def _rescaled(stored: list[np.ndarray], frames: list[_Frame], padding: list[float | None]
              ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Stack stored grey frames, apply RescaleSlope / RescaleIntercept, mask PixelPaddingValue.

    Integer rescales keep an integer dtype (int16 when the values fit, as for
    Hounsfield units); others give float32. Works one frame at a time, so
    temporaries stay the size of a slice.
    """
    data = np.stack(stored)
    valid = np.ones(data.shape, dtype=bool)
    for k, pad in enumerate(padding):
        if pad is not None:
            valid[k] = data[k] != pad
    slopes = [fr.slope for fr in frames]
    intercepts = [fr.intercept for fr in frames]
    if all(s == 1 for s in slopes) and all(b == 0 for b in intercepts):
        return data, valid, False
    dtype = np.dtype(np.float32)
    if all(float(v).is_integer() for v in slopes + intercepts):
        ends = [v * s + b for k, (s, b) in enumerate(zip(slopes, intercepts))
                for v in (int(data[k].min()), int(data[k].max()))]
        for candidate in (np.int16, np.int32):
            info = np.iinfo(candidate)
            if info.min <= min(ends) and max(ends) <= info.max:
                dtype = np.dtype(candidate)
                break
    out = np.empty(data.shape, dtype=dtype)
    for k, (s, b) in enumerate(zip(slopes, intercepts)):
        if dtype.kind == "i":
            out[k] = data[k].astype(np.int64) * int(s) + int(b)
        else:
            out[k] = data[k].astype(np.float64) * s + b
    return out, valid, True


def _dicom_image(path: Path, datasets: list, frames: list[_Frame], geometry: _Geometry,
                 stored: list[np.ndarray], *, n_files: int) -> Image:
    ds = datasets[0]
    frames = [frames[i] for i in geometry.order]
    stored = [stored[i] for i in geometry.order]
    colour = frames[0].samples == 3
    if colour:
        data, valid, rescaled = np.stack(stored), np.ones((len(stored), *stored[0].shape[:2]), bool), False
        channels = _RGB
    else:
        padding = [_number(getattr(d, "PixelPaddingValue", None)) for d in datasets]
        if len(padding) != len(stored):  # one multi-frame file
            padding = padding[:1] * len(stored)
        padding = [padding[i] for i in geometry.order]
        data, valid, rescaled = _rescaled(stored, frames, padding)
        data = data[..., np.newaxis]
        channels = ("gray",)
    valid &= _finite_mask(data)
    if len(frames) == 1:
        data, valid = data[0], valid[0]
    modality = str(getattr(ds, "Modality", "") or "")
    units = str(getattr(ds, "RescaleType", "") or "") or ("HU" if modality == "CT" and rescaled else "")
    series_uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
    meta = {
        "format": "dicom",
        "affine": geometry.affine,
        "geometry": "exact" if geometry.exact else "approximate",
        "modality": modality,
        "series_uid": series_uid,
        "series_description": str(getattr(ds, "SeriesDescription", "") or ""),
        "transfer_syntax": str(_transfer_syntax(ds) or ""),
        "photometric": str(getattr(ds, "PhotometricInterpretation", "") or ""),
        "rescaled": rescaled,
        "units": units,
        "n_files": n_files,
        "sform_code": 1,  # scanner coordinates
        "qform_code": 1,
    }
    return Image(data=np.ascontiguousarray(data), valid=valid, path=path, spacing=geometry.spacing,
                 channels=channels, meta=meta)


def read_dicom(path: Path, *, max_pixels: int) -> Image:
    """Read one DICOM file: a single slice ``(H, W, C)`` or a multi-frame volume ``(Z, H, W, C)``.

    Grey values are the modality values ``stored * RescaleSlope +
    RescaleIntercept`` (Hounsfield units for CT); PixelPaddingValue pixels
    are invalid. See the module docstring for the axes and ``meta["affine"]``.
    """
    pydicom = require("pydicom", what="reading DICOM", path=path)
    with logged_warnings(path):
        ds = _dcmread(pydicom, path)
        frames = _frames_of(ds, path)
        _check_pixels(path, (len(frames), frames[0].rows, frames[0].columns), max_pixels)
        geometry = _geometry(path, frames)
        arr = _decode(path, ds, pydicom)
    expected = (frames[0].rows, frames[0].columns) + ((frames[0].samples,) if frames[0].samples > 1 else ())
    if len(frames) == 1:
        arr = arr[np.newaxis]
    if arr.shape != (len(frames), *expected):
        raise ImageReadError(f"{path}: DICOM pixel data has shape {arr.shape[1:]}, the header "
                             f"says {expected}; truncated or corrupt file")
    return _dicom_image(path, [ds], frames, geometry, list(arr), n_files=1)


def _series_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise ImageReadError(f"{folder}: cannot list directory ({one_line(err, with_type=True)})") from err
    return [p for p in entries if not p.name.startswith(".") and p.is_file()]


def _looks_like_dicom(path: Path) -> bool:
    """'DICM' at byte 128, or a raw data set starting with a group 0x0002 / 0x0008 tag."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or (len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00")
                                        and head[3] == 0)


def read_dicom_series(folder: Path, *, max_pixels: int, series: str | None = None) -> Image:
    """Read the DICOM images in `folder` (not its sub-folders) as one volume.

    Files that are not DICOM images (text, DICOMDIR, structured reports) are
    skipped. Slices are ordered by position along the slice normal. A folder
    with several series needs `series`, the SeriesInstanceUID to read.
    """
    files = _series_files(folder)
    if not files:
        raise ImageReadError(f"{folder}: a folder is read as one DICOM series, and this one holds "
                             f"no file; {FOLDER_HINT}")
    pydicom = require("pydicom", what="reading a DICOM series (a directory)", path=folder)
    by_series: dict[str, list[tuple[Path, object]]] = {}
    with logged_warnings(folder):
        for file in files:
            if file.name.upper() == "DICOMDIR" or not _looks_like_dicom(file):
                continue
            try:
                ds = _dcmread(pydicom, file, stop_before_pixels=True)
            except _NotAnImage:
                continue
            uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
            by_series.setdefault(uid, []).append((file, ds))
    if not by_series:
        raise ImageReadError(
            f"{folder}: a folder is read as one DICOM series, and this one holds no DICOM image "
            f"(among {counted(len(files), 'file')}); {FOLDER_HINT}")
    if series is None and len(by_series) > 1:
        listing = "; ".join(_series_summary(uid, items) for uid, items in sorted(by_series.items()))
        raise ImageReadError(f"{folder}: folder holds {len(by_series)} DICOM series; choose "
                             f"one with series=UID: {listing}")
    if series is not None and series not in by_series:
        listing = "; ".join(_series_summary(uid, items) for uid, items in sorted(by_series.items()))
        raise ImageReadError(f"{folder}: no DICOM series {series!r} in the folder; it holds: {listing}")
    chosen = by_series[series if series is not None else next(iter(by_series))]
    if len(chosen) == 1:
        image = read_dicom(chosen[0][0], max_pixels=max_pixels)
        return dataclasses.replace(image, path=folder, meta=dict(image.meta))
    frames = []
    for file, ds in chosen:
        file_frames = _frames_of(ds, file)
        if len(file_frames) > 1:
            raise ImageReadError(f"{folder}: {file.name} is a multi-frame DICOM inside a series of "
                                 f"{len(chosen)} files; read it on its own")
        frames.extend(file_frames)
    _check_pixels(folder, (len(frames), frames[0].rows, frames[0].columns), max_pixels)
    with logged_warnings(folder):
        geometry = _geometry(folder, frames)
        datasets, stored = [], []
        expected = (frames[0].rows, frames[0].columns) + (
            (frames[0].samples,) if frames[0].samples > 1 else ())
        for file, _ in chosen:
            ds = _dcmread(pydicom, file)
            arr = _decode(file, ds, pydicom)
            if arr.shape != expected:
                raise ImageReadError(f"{file}: DICOM pixel data has shape {arr.shape}, expected "
                                     f"{expected} as in the rest of the series")
            datasets.append(ds)
            stored.append(arr)
    return _dicom_image(folder, datasets, frames, geometry, stored, n_files=len(chosen))


def _series_summary(uid: str, items: list) -> str:
    ds = items[0][1]
    what = " ".join(str(v) for v in (getattr(ds, "Modality", ""), getattr(ds, "SeriesDescription", ""))
                    if v)
    return (f"{uid or '(no SeriesInstanceUID)'} ({counted(len(items), 'image')}"
            f"{', ' + what if what else ''})")


# --------------------------------------------------------------------------
# NIfTI


def _nifti_header(nib, path: Path):
    """Parse and check the header before any data is read; one-line errors for broken ones."""
    try:
        with nib.openers.ImageOpener(path) as f:
            raw = f.read(544)
    except MemoryError:
        raise
    except Exception as err:
        raise ImageReadError(f"{path}: truncated or corrupt NIfTI file ({one_line(err, with_type=True)})") from err
    sizes = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    if 348 in sizes and len(raw) >= 348:
        magic = raw[344:348]
        klass = nib.nifti1.Nifti1Header if magic == b"n+1\x00" else nib.nifti1.Nifti1PairHeader
        if magic not in (b"n+1\x00", b"ni1\x00"):
            raise ImageReadError(f"{path}: broken NIfTI header (magic {magic!r}, expected b'n+1\\x00')")
    elif 540 in sizes and len(raw) >= 540:
        magic = raw[4:8]
        klass = nib.nifti2.Nifti2Header if magic == b"n+2\x00" else nib.nifti2.Nifti2PairHeader
        if magic not in (b"n+2\x00", b"ni2\x00"):
            raise ImageReadError(f"{path}: broken NIfTI header (magic {magic!r}, expected b'n+2\\x00')")
    else:
        raise ImageReadError(f"{path}: broken NIfTI header (sizeof_hdr is not 348 or 540, or the "
                             f"file is shorter than a header: {len(raw)} bytes)")
    try:
        header = klass.from_fileobj(io.BytesIO(raw), check=False)
        # Level 30 and up are real faults (wrong sizeof_hdr, unknown datatype, ...).
        header.check_fix(logger=_HEADER_CHECKS, error_level=30)
        shape = tuple(int(s) for s in header.get_data_shape())
    except MemoryError:
        raise
    except Exception as err:
        raise ImageReadError(f"{path}: broken NIfTI header ({one_line(err, with_type=True)})") from err
    if not shape or any(s < 1 for s in shape):
        raise ImageReadError(f"{path}: broken NIfTI header (dimensions {shape})")
    return header, shape


def read_nifti(path: Path, *, max_pixels: int, volume: int | None = None) -> Image:
    """Read a 3-D NIfTI volume, or one volume of a 4-D file (``volume``, default 0).

    Values are scaled by scl_slope / scl_inter when the header sets them;
    NaN voxels are invalid. See the module docstring for the axes.
    """
    nib = require("nibabel", what="reading NIfTI", path=path)
    header, shape = _nifti_header(nib, path)
    # Trailing length-1 axes (x, y, z, 1, 1) do not make a 4-D file.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise ImageReadError(f"{path}: NIfTI has {len(shape)} dimensions {shape}; gmmseg reads 3-D "
                             "volumes and one volume of a 4-D file")
    n_volumes = shape[3] if len(shape) == 4 else 1
    index = 0 if volume is None else int(volume)
    if not 0 <= index < n_volumes:
        raise ImageReadError(f"{path}: volume {index} does not exist; the file holds "
                             f"{counted(n_volumes, 'volume')}, numbered 0 to {n_volumes - 1}")
    spatial = (shape + (1, 1))[:3]
    _check_pixels(path, spatial, max_pixels)
    dtype = header.get_data_dtype()
    if dtype.kind not in "biuf":
        raise ImageReadError(f"{path}: NIfTI data type {dtype} is not supported (gmmseg reads "
                             "integer and float volumes)")
    try:
        with logged_warnings(path):
            img = nib.load(path, mmap=False)
            proxy = img.dataobj
            full = tuple(int(s) for s in img.shape)
            if len(full) > 3:
                arr = np.asanyarray(proxy[(slice(None),) * 3 + (index,) + (0,) * (len(full) - 4)])
            else:
                arr = np.asanyarray(proxy)
            affine = np.asarray(img.affine, dtype=np.float64)
            zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
            sform_code = int(img.header["sform_code"])
            qform_code = int(img.header["qform_code"])
            units = img.header.get_xyzt_units()
    except (ImageReadError, MemoryError):
        raise
    except Exception as err:
        raise ImageReadError(f"{path}: truncated or corrupt NIfTI file ({one_line(err, with_type=True)})") from err
    arr = arr.reshape(spatial)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    # NIfTI (i, j, k) -> gmmseg (k, j, i), see the module docstring.
    data = np.ascontiguousarray(arr.transpose(2, 1, 0))[..., np.newaxis]
    zooms = (zooms + (1.0, 1.0, 1.0))[:3]
    spacing = (zooms[2], zooms[1], zooms[0])
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        logger.warning("%s: voxel sizes %s are not positive; using 1", path, zooms)
        spacing = None
    if data.shape[0] == 1:  # a single slice is a 2-D image
        data = data[0]
        spacing = spacing[1:] if spacing else None
    meta = {
        "format": "nifti",
        "affine": affine,
        "shape": shape,
        "volume": index,
        "n_volumes": n_volumes,
        "sform_code": sform_code,
        "qform_code": qform_code,
        "xyzt_units": units,
        "dtype": str(dtype),
    }
    return Image(data=data, valid=_finite_mask(data), path=path, spacing=spacing,
                 channels=("gray",), meta=meta)


def nifti_affine(image: Image) -> np.ndarray:
    """The 4x4 affine a NIfTI result of `image` is written with.

    ``meta["affine"]`` when the reader set one; otherwise a diagonal affine
    from ``image.spacing`` (x, y, z voxel sizes), for volumes built in memory.
    """
    affine = image.meta.get("affine")
    if affine is not None:
        return np.asarray(affine, dtype=np.float64)
    spacing = image.spacing or (1.0,) * image.ndim
    dz, dy, dx = spacing if len(spacing) == 3 else (1.0, *spacing)
    return np.diag([dx, dy, dz, 1.0])


def write_nifti(path: str | os.PathLike, array: np.ndarray, image: Image, *,
                n_components: int | None = None, overwrite: bool = False) -> None:
    """Write a result map of `image` as NIfTI (``.nii`` or gzipped ``.nii.gz``), atomically.

    Parameters
    ----------
    path : path
        Output file; ``.gz`` compresses it.
    array : ndarray of shape ``image.spatial_shape`` or ``image.spatial_shape + (K,)``
        Already in the dtype to store (labels uint8 / uint16, maps float32).
    image : Image
        The input; its affine and xform codes are copied and the inverse of the
        reader's transpose is applied, so the result overlays the input.
    n_components : int, optional
        Marks a label map: the NIfTI intent becomes "label" and cal_min /
        cal_max span 0..K-1 so viewers show it as a label volume.
    """
    nib = require("nibabel", what="writing NIfTI", path=path, error=GmmsegError)
    arr = array[np.newaxis] if image.ndim == 2 else array
    arr = np.ascontiguousarray(arr.transpose((2, 1, 0, *range(3, arr.ndim))))
    affine = nifti_affine(image)
    img = nib.Nifti1Image(arr, affine)
    header = img.header
    img.set_sform(affine, code=int(image.meta.get("sform_code", 2) or 0))
    img.set_qform(affine, code=int(image.meta.get("qform_code", 0) or 0))
    header.set_xyzt_units(*image.meta.get("xyzt_units", ("mm", "sec")))
    if n_components is not None:
        header.set_intent("label")
        header["cal_min"], header["cal_max"] = 0, max(n_components - 1, 0)
    data = img.to_bytes()
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


# --------------------------------------------------------------------------
# Label descriptions for viewers, and the viewing orientation


def _label_rows(colors, names) -> list[tuple[int, tuple[int, int, int], str]]:
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[1] != 3 or len(names) != colors.shape[0]:
        raise ValueError(f"need one RGB colour per name, got colours of shape {colors.shape} "
                         f"and {counted(len(names), 'name')}")
    rows = []
    for k, (rgb, name) in enumerate(zip(colors, names)):
        text = " ".join(str(name).replace('"', "'").split())  # one line, no quotes
        rows.append((k, tuple(int(c) for c in rgb), text))
    return rows


def write_itksnap_labels(path: str | os.PathLike, colors, names, *,
                         overwrite: bool = False) -> None:
    """Write an ITK-SNAP label description file: a colour and a name per label.

    ITK-SNAP loads it with Segmentation > Import Label Descriptions; lines
    are ``IDX -R- -G- -B- -A-- VIS MSH "LABEL"`` (colours 0..255, opacity
    0..1, visible, shown in 3-D), label ``k`` on line ``k``.  (ITK-SNAP
    always draws label 0 as its clear label.)

    Parameters
    ----------
    path : path
    colors : (K, 3) array of int in 0..255
        Colour of label ``k``, as in the overlay.
    names : sequence of K str
    overwrite : bool, default False
    """
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File (written by gmmseg)",
        "# File format:",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Fields:",
        "#    IDX:   Zero-based index",
        "#    -R-:   Red color component (0..255)",
        "#    -G-:   Green color component (0..255)",
        "#    -B-:   Blue color component (0..255)",
        "#    -A-:   Label transparency (0.00 .. 1.00)",
        "#    VIS:   Label visibility (0 or 1)",
        "#    MSH:   Label mesh visibility (0 or 1)",
        "#  LABEL:   Label description",
        "################################################",
    ]
    for k, (r, g, b), name in _label_rows(colors, names):
        lines.append(f"{k:5d} {r:5d} {g:4d} {b:4d} {1:8.2f} {1:2d} {1:2d}    \"{name}\"")
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_fsleyes_lut(path: str | os.PathLike, colors, names, *, overwrite: bool = False) -> None:
    """Write an FSLeyes lookup table (``.lut``): ``value R G B name`` per label, colours 0..1.

    FSLeyes loads it in the lookup table panel of a label overlay (FSLeyes
    reads its own ``.lut`` format, not ITK-SNAP's); labels are in ascending
    order as FSLeyes requires, without comment lines (which FSLeyes before
    1.12.3 misread).
    """
    lines = [f"{k} {r / 255:.5f} {g / 255:.5f} {b / 255:.5f} {name}"
             for k, (r, g, b), name in _label_rows(colors, names)]
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


#: Where the ends of each viewing axis lie: superior to inferior, anterior
#: to posterior, right to left (the radiological convention of ITK-SNAP).
VIEWING_LETTERS = (("S", "I"), ("A", "P"), ("R", "L"))


def viewing_axes(image: Image) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]] | None:
    """How to turn a volume so that it is seen as radiologists see it.

    Axis ``d`` of the turned volume is axis ``order[d]`` of ``image.data``,
    reversed where ``flip[d]``: axis 0 runs from superior to inferior, axis 1
    from anterior to posterior and axis 2 from the patient's right to left
    (see `VIEWING_LETTERS`), so a slice across axis 0 is an axial view with
    anterior up and the patient's right on the left, as ITK-SNAP shows it.
    Each voxel axis goes to the patient axis it points along most (as
    nibabel's ``io_orientation``), from ``meta["affine"]``.

    Returns
    -------
    (order, flip) or None
        None for 2-D images, and for volumes without an affine (built in
        memory) or with a degenerate one.
    """
    affine = image.meta.get("affine")
    if affine is None or image.ndim != 3:
        return None
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    # image axis a (slice, row, column) is the NIfTI voxel axis 2 - a (k, j, i).
    directions = columns[:, [2, 1, 0]].T
    lengths = np.linalg.norm(directions, axis=1)
    if not np.all(np.isfinite(directions)) or np.any(lengths <= 0):
        return None
    directions = directions / lengths[:, np.newaxis]
    patient_of = {}
    weight = np.abs(directions)
    for _ in range(3):  # the strongest remaining (image axis, patient axis) pair first
        a, p = np.unravel_index(np.argmax(weight), weight.shape)
        patient_of[int(a)] = int(p)
        weight[a, :] = -1.0
        weight[:, p] = -1.0
    order, flip = [], []
    for d in range(3):
        patient = 2 - d  # viewing axis 0 is S (RAS axis 2), 1 is A, 2 is R
        a = next(a for a, p in patient_of.items() if p == patient)
        order.append(a)
        flip.append(bool(directions[a, patient] > 0))  # index 0 must be the S / A / R end
    return tuple(order), tuple(flip)
