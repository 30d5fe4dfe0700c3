"""One input's work, as it runs in a worker process: read, segment, save.

:func:`_process` turns every exception into the row's one-line error, so a
bad input never stops the others; nothing here decides what to run where.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import signal
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
from threadpoolctl import threadpool_limits

from .._log import configure_logging
from ..errors import GmmsegError, failure_reason, one_line
from ..features import FeatureExtractor
from ..io import read_image, real_path
from ..mixture import GaussianMixture
from ..pipeline import Segmentation, check_model_input, segment
from .gallery import write_thumbnails
from .inputs import BatchItem, _output_folder, _rel
from .summary import _blank_row, _fill_from_report
from .windowed import beyond_budget, segment_one_windowed

logger = logging.getLogger(__name__)

# The save options that decide which files it writes (output_paths's).
_OUTPUT_PATH_OPTIONS = set(inspect.signature(Segmentation.output_paths).parameters) - {
    "self", "out_dir", "stem", "anomaly_mask"}


@dataclass(frozen=True)
class _Task:
    """Everything a worker needs besides the item; identical for every input."""

    out_dir: str
    segment_kwargs: dict
    save_kwargs: dict
    read_kwargs: dict
    overwrite: bool
    threads: int
    model: GaussianMixture | None = None
    extractor: FeatureExtractor | None = None
    thumbnails: bool = True
    # The caller's logging level for gmmseg's records, for worker processes
    # gmmseg starts; None on a remote Dask cluster, whose logging is not ours.
    log_level: int | None = None
    # Bytes one worker may use (run_batch's share of max_memory); an input
    # beyond it is segmented window by window.  None: always in memory.
    max_memory: int | None = None


def _path_options(save_kwargs: Mapping) -> dict:
    """The ``save`` options that decide which files it writes, for ``output_paths``."""
    options = {k: v for k, v in save_kwargs.items() if k in _OUTPUT_PATH_OPTIONS}
    options["anomaly_mask"] = (save_kwargs.get("anomaly_quantile") is not None
                               or save_kwargs.get("anomaly_threshold") is not None)
    return options


def _segment_one(item: BatchItem, task: _Task, protected: frozenset) -> dict:
    if beyond_budget(item.path, task.max_memory, task.segment_kwargs, task.save_kwargs,
                     task.read_kwargs):
        if task.model is None:
            return segment_one_windowed(item, task, protected)
        # The windowed path fits its own model; a given or shared one is
        # applied as before, in memory, rather than refusing the input.
        warnings.warn(f"{item.path}: beyond max_memory, but a given or shared model is applied "
                      "in memory (the windowed path fits its own)", RuntimeWarning, stacklevel=1)
    image = read_image(item.path, **task.read_kwargs)
    kwargs = dict(task.segment_kwargs)
    kwargs.setdefault("n_jobs", task.threads)
    if task.model is not None:
        check_model_input(image, task.extractor, path=item.path)
        model = copy.copy(task.model)
        model.set_params(n_jobs=kwargs["n_jobs"])
        kwargs.update(model=model, feature_extractor=task.extractor)
    seg = segment(image, **kwargs)
    folder = _output_folder(task.out_dir, item)
    targets = seg.output_paths(folder, item.stem, **_path_options(task.save_kwargs))
    for target in targets.values():
        if str(real_path(target)) in protected:
            raise GmmsegError(f"{target}: output would replace an input file")
    paths = seg.save(folder, item.stem, overwrite=task.overwrite, **task.save_kwargs)
    out_dir = Path(task.out_dir)
    result = {"outputs": {kind: _rel(p, out_dir) for kind, p in paths.items()}}
    if task.thumbnails:
        try:
            result["thumbnails"] = write_thumbnails(out_dir, item, seg.image, paths)
        except Exception as err:  # a missing thumbnail must not fail the input
            warnings.warn(f"no gallery thumbnail: {one_line(err)}", RuntimeWarning,
                          stacklevel=1)
    result["report_doc"] = json.loads(paths["report"].read_text())
    return result


def _process(item: BatchItem, task: _Task, protected: frozenset = frozenset()) -> dict:
    """Segment and save one input; every exception becomes the row's one-line error."""
    row = _blank_row(item)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Small matrix products (k-means++, M-step) only slow down with
            # BLAS threads; EM parallelises over rows itself (n_jobs).
            with threadpool_limits(limits=1, user_api="blas"):
                result = _segment_one(item, task, protected)
            _fill_from_report(row, result.pop("report_doc"))
            row.update(result, status="ok")
        except Exception as err:  # one bad input must not stop the others
            row["error"] = failure_reason(err, item.path)
            logger.debug("%s failed", item.path, exc_info=True)
    seen = []
    for w in caught:
        text = one_line(w.message)
        if text not in seen:
            seen.append(text)
    row["warnings"] = seen
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


def _limit_process_threads(threads: int) -> None:
    """Per-process thread caps for a worker that runs one input at a time."""
    cv2.setNumThreads(threads)
    threadpool_limits(limits=1, user_api="blas")
    threadpool_limits(limits=threads, user_api="openmp")


def _init_worker(threads: int, log_level: int | None = None) -> None:
    # Ctrl-C goes to the whole process group: let the parent decide, so
    # running inputs finish and are recorded.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_process_threads(threads)
    _log_as_the_caller(log_level)


def _log_as_the_caller(log_level: int | None) -> None:
    """A worker's log lines as the calling process's: gmmseg's at its level, others' quiet.

    A worker writes to the caller's terminal; unconfigured, the readers'
    warnings (tifffile's) would reach it raw through logging's last resort.
    """
    if log_level is not None:
        configure_logging(log_level)


def _process_on_dask(item: BatchItem, task: _Task, protected: frozenset) -> dict:
    _limit_process_threads(task.threads)
    _log_as_the_caller(task.log_level)
    return _process(item, task, protected)
