"""Inputs beyond a batch worker's memory budget: segmented window by window in that worker.

Owns the share of ``max_memory`` each worker gets (:func:`worker_budget`),
whether an input takes the windowed path (:func:`beyond_budget`), the
windowed work of one input (:func:`segment_one_windowed`, one window at a
time with :func:`gmmseg.pipeline.windowed.segment_windowed`) and the
output kinds of a windowed report (:func:`windowed_outputs`), which
``resume`` reads too.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..errors import GmmsegError, one_line
from ..io import real_path
from ..pipeline.windowed import (BASELINE, format_bytes, needs_windows, output_name,
                                 output_names, segment_windowed)
from .gallery import write_thumbnails
from .inputs import BatchItem, _output_folder, _rel

#: The least memory a worker is given: the libraries (``BASELINE``) and
#: 96 MiB of pixels; fewer workers run at once when the budget cannot give
#: each of them this much.
MIN_WORKER_MEMORY = BASELINE + 96 * 1024**2

# The windowed report's file kinds, as batch rows name them.
_KINDS = {"labels": "labels", "labels_table": "labels_aux", "overlay": "overlay",
          "proba": "proba", "loglik": "log_likelihood"}

# Keyword arguments of gmmseg.segment the windowed path has no counterpart of.
_WHOLE_IMAGE_OPTIONS = {"mask": "mask", "model": "model", "feature_extractor": "model",
                        "channel_axis": "channel_axis", "spacing": "spacing"}


def worker_budget(budget: int, jobs: int, n_inputs: int) -> tuple[int, int]:
    """``(workers, per_worker)``: inputs segmented at once and the bytes each may use.

    The budget is divided among the workers that run at once
    (``min(jobs, n_inputs)``); when that would leave one less than
    :data:`MIN_WORKER_MEMORY`, fewer run at once (at least one).
    """
    workers = max(1, min(jobs, n_inputs))
    if budget // workers < MIN_WORKER_MEMORY:
        workers = max(1, min(workers, budget // MIN_WORKER_MEMORY))
    return workers, budget // workers


def _read_options(read_kwargs):
    # ``series`` picks a DICOM series; DICOM is always read whole.
    return {k: v for k, v in read_kwargs.items() if k != "series"}


def beyond_budget(path, max_memory, segment_kwargs, save_kwargs, read_kwargs) -> bool:
    """Whether ``path`` is windowed in a worker with ``max_memory`` bytes (header only)."""
    if max_memory is None:
        return False
    return needs_windows(path, max_memory=max_memory,
                         save_proba=bool(save_kwargs.get("proba")),
                         save_loglik=bool(save_kwargs.get("log_likelihood")),
                         **_read_options(read_kwargs), **segment_kwargs)


def _check_windowed_request(path, task):
    """Refuse, in one line, what a windowed input of a batch cannot do."""
    where = (f"{path}: the image is beyond max_memory ({format_bytes(task.max_memory)} per "
             "worker)")
    for key, name in _WHOLE_IMAGE_OPTIONS.items():
        if task.segment_kwargs.get(key) is not None:
            raise GmmsegError(f"{where}; {name} needs the whole image (raise max_memory)")
    save = task.save_kwargs
    if (save.get("uncertainty") or save.get("anomaly") or save.get("anomaly_quantile")
            is not None or save.get("anomaly_threshold") is not None):
        raise GmmsegError(f"{where}; uncertainty and anomaly maps need the whole image "
                          "(raise max_memory)")


def windowed_outputs(files, folder) -> dict[str, Path]:
    """Output kind -> path in ``folder`` of a windowed report's ``files`` (report excluded)."""
    return {_KINDS.get(kind, kind): Path(folder) / Path(str(name)).name
            for kind, name in files.items()}


def segment_one_windowed(item: BatchItem, task, protected: frozenset) -> dict:
    """Segment ``item`` window by window, one window at a time, and save its files.

    Returns the worker's result: ``outputs``, ``thumbnails`` (the overlay
    preview's; the input itself is never read whole) and ``report_doc``.
    """
    _check_windowed_request(item.path, task)
    folder = _output_folder(task.out_dir, item)
    for name in output_names(item.stem):
        target = folder / name
        if str(real_path(target)) in protected:
            raise GmmsegError(f"{target}: output would replace an input file")
    # Refused above unless None (the CLI passes mask=None).
    kwargs = {k: v for k, v in task.segment_kwargs.items() if k not in _WHOLE_IMAGE_OPTIONS}
    kwargs.setdefault("n_jobs", task.threads)
    save = task.save_kwargs
    report = segment_windowed(
        item.path, folder, item.stem, max_memory=task.max_memory, workers=1,
        save_proba=bool(save.get("proba")), save_loglik=bool(save.get("log_likelihood")),
        regions=save.get("regions", "auto"), alpha=save.get("alpha", 0.5),
        overwrite=task.overwrite, **_read_options(task.read_kwargs), **kwargs)
    out_dir = Path(task.out_dir)
    paths = windowed_outputs(report["files"], folder)
    paths["report"] = folder / output_name(item.stem, "report")
    result = {"outputs": {kind: _rel(p, out_dir) for kind, p in paths.items()}}
    if task.thumbnails:
        result["thumbnails"] = windowed_thumbnails(out_dir, item, paths)
    result["report_doc"] = json.loads(paths["report"].read_text())
    return result


def windowed_thumbnails(out_dir: Path, item: BatchItem, paths) -> dict[str, str]:
    """The gallery's thumbnail of a windowed input: its overlay preview, or none with a warning."""
    if "overlay" not in paths:
        warnings.warn("no gallery thumbnail: a volume beyond max_memory has no overlay",
                      RuntimeWarning, stacklevel=2)
        return {}
    try:
        return write_thumbnails(out_dir, item, None, paths)
    except Exception as err:  # a missing thumbnail must not fail the input
        warnings.warn(f"no gallery thumbnail: {one_line(err)}", RuntimeWarning, stacklevel=2)
        return {}
