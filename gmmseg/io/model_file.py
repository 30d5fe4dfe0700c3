"""Model files: named float64 arrays plus JSON metadata, checksummed, never pickled.

This module owns the container of saved models: the ``.npz`` and ``.json``
layouts, the format name and version, the SHA-256 checksum over the metadata
and the arrays, the atomic write, loading without pickle, and the
`ModelFileError` messages (each names the file).  It works on plain data, a
dict of arrays and a JSON-able ``info`` dict, and knows nothing of what they
mean: :meth:`gmmseg.mixture.GaussianMixture.save` and ``load`` turn the
estimator's state into this payload and back.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from .writers import atomic_output

# Every model file carries these; a reader refuses other names and versions.
FORMAT_NAME = "gmmseg.GaussianMixture"
FORMAT_VERSION = 1


def write_model_file(path, arrays, info):
    """Write ``arrays`` and ``info`` to ``.npz`` (default) or ``.json``; never pickle.

    The file is written atomically and replaces an existing one.

    Parameters
    ----------
    path : str or Path
        The suffix chooses the format: ``.json`` writes JSON, anything else
        ``.npz``.
    arrays : dict of str to array-like
        Stored as float64, in this order.
    info : dict
        JSON-serialisable metadata.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "model.json"
    >>> write_model_file(path, {"means_": np.zeros((2, 1))}, {"n": 2})
    >>> arrays, info = read_model_file(path, ["means_"])
    >>> arrays["means_"].shape, info
    ((2, 1), {'n': 2})
    """
    path = Path(path)
    arrays = {name: np.asarray(a, dtype=np.float64) for name, a in arrays.items()}
    header = json.dumps(info, sort_keys=True)
    checksum = _checksum(header, arrays)
    # atomic_output's temporaries are the ones batch --resume cleans up
    # after a killed run.
    with atomic_output(path, overwrite=True) as tmp:
        if path.suffix.lower() == ".json":
            doc = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                   "info": info, "checksum": checksum,
                   "arrays": {name: a.tolist() for name, a in arrays.items()}}
            tmp.write_text(json.dumps(doc, indent=1))
        else:
            with open(tmp, "wb") as fh:
                np.savez(fh, format=np.array(FORMAT_NAME),
                         format_version=np.array(FORMAT_VERSION),
                         info=np.array(header), checksum=np.array(checksum), **arrays)


def read_model_file(path, array_names):
    """Read a file written by :func:`write_model_file`, checking it thoroughly.

    Parameters
    ----------
    path : str or Path
        ``.json`` is read as JSON, anything else as ``.npz`` (without pickle).
    array_names : iterable of str
        The arrays to read; a missing one makes the file unreadable.

    Returns
    -------
    arrays : dict of str to float64 ndarray
    info : dict

    Raises
    ------
    ModelFileError
        The file is missing, not a gmmseg model file, of an unknown format
        version, or its contents were altered (checksum mismatch).
    """
    path = Path(path)

    def fail(problem):
        return ModelFileError(f"{path}: {problem}")

    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or "format" not in doc:
                raise fail("not a readable gmmseg model file (JSON without gmmseg's format entry)")
            fmt, version = doc["format"], doc["format_version"]
            info, checksum = doc["info"], doc["checksum"]
            header = json.dumps(info, sort_keys=True)
            arrays = {n: np.asarray(doc["arrays"][n], dtype=np.float64) for n in array_names}
        else:
            fmt, version, header, checksum, arrays = _read_npz(path, array_names, fail)
            info = json.loads(header)
    except ModelFileError:
        raise
    except FileNotFoundError as err:
        raise fail("no such file") from err
    except UnicodeDecodeError as err:
        raise fail("not a readable gmmseg model file (not JSON text)") from err
    except zipfile.BadZipFile as err:
        raise fail("not a readable gmmseg model file (a damaged .npz archive)") from err
    except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
        raise fail(f"not a readable gmmseg model file ({_reason(err)})") from err
    if fmt != FORMAT_NAME:
        raise fail(f"not a gmmseg model file (format {fmt!r})")
    if version != FORMAT_VERSION:
        raise fail(f"model format version {version} is not supported "
                   f"(this gmmseg reads version {FORMAT_VERSION})")
    if checksum != _checksum(header, arrays):
        raise fail("checksum mismatch: the file was modified or corrupted")
    return arrays, info


# The first bytes of a zip archive (an .npz is one): a local file header,
# or the end-of-directory record of an empty archive.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _read_npz(path, array_names, fail):
    """``(format, version, header, checksum, arrays)`` of an ``.npz`` model file.

    Never unpickles: a file that is not a zip archive is refused from its
    first bytes (``np.load`` would otherwise take it for a pickle), and an
    archive holding object arrays is refused without NumPy's advice to load
    it with ``allow_pickle``.
    """
    with open(path, "rb") as fh:  # ours to close, also when the archive is damaged
        if fh.read(4) not in _ZIP_MAGIC:
            raise fail("not a readable gmmseg model file (not an .npz archive)")
        fh.seek(0)
        with np.load(fh, allow_pickle=False) as npz:
            return _npz_contents(npz, array_names, fail)


def _npz_contents(npz, array_names, fail):
    """The entries of an open model archive; object arrays refused, never loaded."""
    missing = [n for n in ("format", "format_version", "info", "checksum", *array_names)
               if n not in npz.files]
    if "format" in missing:
        held = ", ".join(npz.files[:5]) + (", ..." if len(npz.files) > 5 else "")
        raise fail(f"not a readable gmmseg model file (an .npz archive of {held or 'nothing'}, "
                   "without gmmseg's format entry)")
    if missing:
        raise fail(f"not a readable gmmseg model file (no {missing[0]!r} array)")
    try:
        arrays = {n: np.asarray(npz[n], dtype=np.float64) for n in array_names}
        return (str(npz["format"]), int(npz["format_version"]), str(npz["info"]),
                str(npz["checksum"]), arrays)
    except ValueError as err:
        if "pickle" in str(err):  # object arrays: gmmseg never unpickles
            raise fail("not a readable gmmseg model file (it holds Python objects, "
                       "which gmmseg never loads)") from err
        raise


def _reason(err):
    """An error of NumPy or json in one line, without advice to unpickle."""
    if "pickle" in str(err):
        return "it holds Python objects, which gmmseg never loads"
    return " ".join(f"{type(err).__name__}: {err}".split())


def _checksum(header, arrays):
    digest = hashlib.sha256(header.encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name], dtype="<f8").tobytes())
    return digest.hexdigest()
