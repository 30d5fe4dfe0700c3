"""The inputs of a batch: which files, and where each one's outputs go.

:func:`find_inputs` walks a folder (patterns, recursion, links) and
:func:`items_from_files` takes files one by one; both give
:class:`BatchItem` s, whose output names :func:`distinct_stems` keeps apart.
Reads no image.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import GmmsegError
from ..io import SUPPORTED_SUFFIXES, file_stem, real_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch and where its outputs go.

    Parameters
    ----------
    path : Path
        The input file as found (a symbolic link stays one; it is only read).
    rel_dir : str
        Output folder relative to the batch's output folder, POSIX style,
        ``"."`` for the top; never absolute, never with ``..``.
    stem : str
        Output file names start with this (``{stem}_labels.png``, ...).
    name : str
        How the input is shown in summaries: its path relative to the input
        folder, or the path as given.
    """

    path: Path
    rel_dir: str
    stem: str
    name: str

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        rel_dir = str(self.rel_dir)
        if os.altsep:
            rel_dir = rel_dir.replace(os.altsep, "/")
        rel = PurePosixPath(rel_dir.replace(os.sep, "/") or ".")
        if rel.is_absolute() or ".." in rel.parts or Path(rel_dir).is_absolute():
            raise ValueError(
                f"{self.name}: output folder {self.rel_dir!r} must be relative and "
                "without '..'")
        object.__setattr__(self, "rel_dir", rel.as_posix())
        separators = {"/", "\0", os.sep, os.altsep} - {None}
        if not isinstance(self.stem, str) or not self.stem or any(
                c in self.stem for c in separators):
            raise ValueError(f"{self.name}: output stem {self.stem!r} is not a plain file name")


def _pattern_hit(rel: str, patterns: Sequence[str]) -> bool:
    rel = rel.lower()
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        pattern = pattern.lower()
        if fnmatch.fnmatchcase(rel if "/" in pattern else name, pattern):
            return True
    return False


def _is_supported(name: str) -> bool:
    return name.lower().endswith(SUPPORTED_SUFFIXES)


def find_inputs(
    input_dir: str | os.PathLike,
    *,
    recursive: bool = False,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> list[BatchItem]:
    """The input files of a folder with their output places.

    Order: a folder's files by name, then its subfolders by name, depth first.

    Parameters
    ----------
    input_dir : path
        Folder to scan.
    recursive : bool, default=False
        Also scan subfolders; outputs mirror the folder tree.  Symbolically
        linked folders are not entered (no loops, no escapes); linked files
        are read, their outputs go where the link is.
    include : sequence of str, optional
        Glob patterns (case-insensitive) a file must match: a pattern with
        ``/`` is matched against the path relative to ``input_dir``, one
        without against the file name.  Default: the suffixes gmmseg reads
        (``gmmseg.io.SUPPORTED_SUFFIXES``); ``["*"]`` takes every file.
    exclude : sequence of str, optional
        Glob patterns, as for ``include``, of files to leave out.
    out_dir : path, optional
        The batch's output folder: if it lies inside ``input_dir`` it is not
        scanned.

    Returns
    -------
    list of BatchItem
        Hidden files and folders (name starting with ``.``) are skipped.

    Raises
    ------
    GmmsegError
        ``input_dir`` is not a folder, or is the output folder itself.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise GmmsegError(f"{root}: not a folder")
    skip = real_path(out_dir) if out_dir is not None else None
    if skip is not None and skip == real_path(root):
        raise GmmsegError(
            f"{root}: the output folder is the input folder; write the outputs elsewhere")
    include = list(include) if include else None
    exclude = list(exclude or ())
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        if recursive:
            dirnames[:] = sorted(
                d for d in dirnames
                if not d.startswith(".") and not (here / d).is_symlink()
                and (skip is None or real_path(here / d) != skip))
        else:
            dirnames[:] = []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if include is None and not _is_supported(name):
                continue
            if include is not None and not _pattern_hit(rel, include):
                continue
            if exclude and _pattern_hit(rel, exclude):
                continue
            path = here / name
            # Regular files and links to them; a dangling link is kept so that
            # it is reported; FIFOs, sockets and devices are never opened.
            if path.is_file() or (path.is_symlink() and not path.exists()):
                items.append(BatchItem(path, rel_dir, file_stem(name), rel))
    return distinct_stems(items)


def items_from_files(paths: Iterable[str | os.PathLike]) -> list[BatchItem]:
    """Items for files given one by one: every output goes into the top folder.

    A file given twice (the same path, however written) is taken once;
    output names are kept apart by :func:`distinct_stems`.
    """
    items, seen = [], set()
    for p in paths:
        where = os.path.normcase(os.path.abspath(p))
        if where not in seen:
            seen.add(where)
            items.append(BatchItem(Path(p), ".", file_stem(p), str(p)))
    return distinct_stems(items)


def distinct_stems(items: Sequence[BatchItem]) -> list[BatchItem]:
    """``items`` with output names that no two of them share.

    Inputs whose outputs would share names -- ``coffee.png`` and
    ``coffee.jpg`` in one folder both make ``coffee_labels.png`` -- keep
    their file's suffix in the stem, after an underscore: ``coffee_png``
    and ``coffee_jpg`` (``scan_nii_gz`` for ``scan.nii.gz``).  An underscore
    rather than the dot keeps a single dot in every output name, so that
    ``coffee_png_labels.png`` is a PNG whose stem is what gmmseg and other
    tools take it for, and ``*_labels.png`` still finds every label map.
    Other inputs keep the names the design documents (``scene_labels.png``).
    Stems count as equal regardless of case, as on macOS and Windows file
    systems.  A clash left over (``a/x.png`` and ``b/x.png`` given one by
    one, or an input really named ``coffee_png.tif``) adds ``_2``, ``_3``,
    ... in the items' order.

    The names depend only on the list of inputs, so the same batch run
    again (``resume``) finds its outputs under the same names.

    Examples
    --------
    >>> items = [BatchItem(Path(n), ".", file_stem(n), n)
    ...          for n in ("coffee.png", "coffee.jpg", "tea.png")]
    >>> [item.stem for item in distinct_stems(items)]
    ['coffee_png', 'coffee_jpg', 'tea']
    """
    def key(rel_dir, stem):
        return rel_dir, stem.casefold()

    clashes = Counter(key(item.rel_dir, item.stem) for item in items)
    taken = {k for k, n in clashes.items() if n == 1}
    out = list(items)
    for i, item in enumerate(items):
        if clashes[key(item.rel_dir, item.stem)] == 1:
            continue
        suffix = item.path.name[len(item.stem):].lstrip(".")
        stem = f"{item.stem}_{suffix.replace('.', '_')}" if suffix else item.stem
        candidate, n = stem, 1
        while key(item.rel_dir, candidate) in taken:
            n += 1
            candidate = f"{stem}_{n}"
        taken.add(key(item.rel_dir, candidate))
        out[i] = BatchItem(item.path, item.rel_dir, candidate, item.name)
        logger.info("%s: outputs named %s_* (another input's would also be named %s_*)",
                    item.name, candidate, item.stem)
    return out


def _inside(out_dir, rel_dir: str) -> Path:
    """``out_dir / rel_dir``, refused if it resolves outside ``out_dir`` (symlinks)."""
    root = real_path(out_dir)
    folder = Path(out_dir) / rel_dir
    real = real_path(folder)
    if real != root and root not in real.parents:
        raise GmmsegError(
            f"output folder {folder} resolves to {real}, outside the output folder {root} "
            "(a symbolic link?); refusing to write there")
    return folder


def _output_folder(out_dir, item: BatchItem) -> Path:
    return _inside(out_dir, item.rel_dir)


def _rel(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()
