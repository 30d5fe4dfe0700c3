"""Atomic writers for PNG, TIFF, ``.npy`` and JSON, and the label dtype policy."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from ..errors import OutputExistsError
from ._png import encode_png

#: Most segments a label map can hold: label files are uint8 up to 255
#: segments and uint16 beyond (`label_dtype`).
MAX_LABELS = int(np.iinfo(np.uint16).max)


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
        raise OutputExistsError(f"{path}: output file exists (use overwrite=True to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: output directory does not exist")
    tmp = _create_temp(path)
    try:
        yield tmp
        _move_into_place(tmp, path, overwrite=overwrite)
    finally:
        tmp.unlink(missing_ok=True)


#: Names of the temporaries `atomic_output` makes; only a killed process leaves one behind.
_TEMP_NAME = re.compile(r"\..+\.tmp-[0-9a-f]{8}")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed writer left in `folder` (not recursive).

    Only files named as `atomic_output` names them (``.{name}.tmp-XXXXXXXX``)
    are touched, so call this only where no other writer is at work, e.g.
    when a batch resumes.  A missing folder is fine.

    Returns
    -------
    list of Path
        The files removed.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / ".a.png.tmp-0badf00d").write_bytes(b"half")
    >>> _ = (folder / "a.png").write_bytes(b"whole")
    >>> [p.name for p in remove_stale_temporaries(folder)]
    ['.a.png.tmp-0badf00d']
    >>> sorted(p.name for p in folder.iterdir())
    ['a.png']
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if _TEMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            path = Path(entry.path)
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
        raise OutputExistsError(f"{path}: output file exists (use overwrite=True to replace it)") from err
    except OSError:
        # File systems without hard links (FAT, some network shares).
        if os.path.lexists(path):
            raise OutputExistsError(f"{path}: output file exists (use overwrite=True to replace it)") from None
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
    >>> from gmmseg.io import read_image
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
    with atomic_output(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            encode_png(array, f.write)


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
    >>> from gmmseg.io import read_image
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
    if not 1 <= n_components <= MAX_LABELS:
        raise ValueError(f"n_components must be between 1 and {MAX_LABELS} (label maps are "
                         f"uint8 or uint16), got {n_components}")
    return np.uint8 if n_components <= 255 else np.uint16

