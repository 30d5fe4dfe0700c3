"""Resuming a batch: which inputs already have a complete set of outputs.

A set is complete when its report (written last, atomically) parses and
every output the run asks for exists; temporaries a killed run left behind
are removed; thumbnails missing from a complete set are drawn again.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import postprocess
from ..errors import GmmsegError, one_line
from ..io import read_image, remove_stale_temporaries
from ..pipeline import Segmentation
from ..pipeline.outputs import OUTPUT_KINDS, find_output, regions_request
from .gallery import THUMBS_DIR, _thumb_paths, thumb_kinds, write_thumbnails
from .inputs import BatchItem, _inside, _output_folder, _rel
from .summary import _blank_row, _fill_from_report
from .windowed import windowed_outputs

logger = logging.getLogger(__name__)

_SAVE_DEFAULTS = {n: p.default for n, p in inspect.signature(Segmentation.save).parameters.items()}


def _completed_row(item: BatchItem, out_dir: Path, save_kwargs: Mapping,
                   n_components: int | None) -> dict | None:
    """The row of an input whose outputs are complete, or None.

    Complete: ``{stem}_report.json`` (written last by ``Segmentation.save``,
    atomically) exists and parses, and every output the run asks for
    exists (paths the report lists, if it lists any, too).  Outputs from a
    run with another number of components give a failed row.
    """
    try:
        folder = _output_folder(str(out_dir), item)
    except GmmsegError:
        return None
    report = folder / f"{item.stem}_report.json"
    try:
        doc = json.loads(report.read_text())
        row = _blank_row(item)
        _fill_from_report(row, doc)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    # A windowed run's report lists its files (a volume's has no overlay).
    windowed = isinstance(doc.get("windowed"), Mapping)
    kinds = ["labels"] if windowed else ["labels", "overlay"]
    kinds += [k for k in ("proba", "log_likelihood") if save_kwargs.get(k)]
    outputs = {"report": _rel(report, out_dir)}
    for kind in kinds:
        found = find_output(folder, item.stem, kind)
        if found is None:
            return None
        outputs[kind] = _rel(found, out_dir)
    listed = doc.get("outputs")
    if windowed and isinstance(doc.get("files"), Mapping):
        listed = {k: p.name for k, p in windowed_outputs(doc["files"], folder).items()}
    if isinstance(listed, Mapping) and not all(
            (folder / Path(str(p)).name).is_file() for p in listed.values()):
        return None
    if isinstance(listed, Mapping):  # e.g. regions, anomaly maps
        for kind, name in listed.items():
            outputs.setdefault(str(kind), _rel(folder / Path(str(name)).name, out_dir))
    wanted_regions = regions_request(
        save_kwargs.get("regions", _SAVE_DEFAULTS["regions"]),
        save_kwargs.get("region_scale", _SAVE_DEFAULTS["region_scale"]))
    if windowed and wanted_regions is not None and wanted_regions[0] != "auto":
        return None  # regions asked for: the windowed path refuses them, in the input's row
    if wanted_regions is not None and not windowed:
        done = doc.get("regions") or {}
        if (done.get("requested"), done.get("scale")) != wanted_regions:
            return None  # no regions, or others than asked for: redo the input
        if done.get("n_regions") is not None and done.get("ridge") != postprocess.REGION_RIDGE:
            return None  # regions merged another way (before Gaussian merging): redo
    if n_components is not None and row["n_components"] != n_components:
        row.update(status="failed", error=(
            f"outputs exist from a run with n_components={row['n_components']} (this run: "
            f"{n_components}); use overwrite=True to redo them"))
        return row
    row["status"] = "skipped"
    row["outputs"] = {k: outputs[k] for k in OUTPUT_KINDS if k in outputs}
    row["outputs"].update((k, v) for k, v in outputs.items() if k not in OUTPUT_KINDS)
    thumbs = _thumb_paths(out_dir, item, thumb_kinds(row["outputs"], whole=not windowed))
    if all(p.is_file() for p in thumbs.values()):
        row["thumbnails"] = {k: _rel(p, out_dir) for k, p in thumbs.items()}
    timings = doc.get("timings") or {}
    row["seconds"] = round(float(timings.get("total", 0.0)) + float(timings.get("write", 0.0)), 4)
    return row


def _remove_stale_temporaries(out_dir: Path, items: Sequence[BatchItem]) -> None:
    """Delete what a killed run left half-written in the folders this batch writes to.

    A folder that cannot be used (a file in its place, a symlink out of
    ``out_dir`` or in a loop, no permission) is left alone: the inputs that
    write there fail on their own, one row each.
    """
    rel_dirs = {item.rel_dir for item in items} | {"."}  # "." holds the summaries
    for rel_dir in sorted(rel_dirs):
        for base in (Path("."), Path(THUMBS_DIR)):
            try:
                remove_stale_temporaries(_inside(out_dir, str(base / rel_dir)))
            except (GmmsegError, OSError, RuntimeError) as err:
                logger.debug("stale temporaries in %s not removed: %s", rel_dir, err)


def _restore_thumbnails(row: dict, item: BatchItem, out_dir: Path, read_kwargs) -> None:
    """Make missing thumbnails of a skipped input (interrupted between save and thumbnails).

    An input segmented window by window is not read: its overlay preview is shrunk.
    """
    try:
        image = None if row.get("windows") is not None else read_image(item.path, **read_kwargs)
        outputs = {kind: out_dir / rel for kind, rel in row["outputs"].items()}
        row["thumbnails"] = write_thumbnails(out_dir, item, image, outputs)
    except Exception as err:  # the outputs are complete; only the gallery lacks a picture
        row["warnings"] = [*row["warnings"], f"no gallery thumbnail: {one_line(err)}"]
