"""``run_batch``: segment many inputs, each in isolation, and write the summary.

Plans the run (duplicate output names, the shared model, what ``resume``
skips, which inputs live in output folders), hands the work to an executor
and writes the summary files, also when interrupted.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._system import available_cpus
from ..errors import GmmsegError, OutputExistsError, counted
from ..features import FeatureExtractor
from ..io import real_path
from ..mixture import GaussianMixture
from ..pipeline import (DEFAULT_PER_IMAGE, MODEL_OPTIONS, fit_shared_model, load_shared_model,
                        save_shared_model, segment)
from ..pipeline.segment import stored_feature_extractor
from ..pipeline.windowed import check_max_memory, format_bytes
from .executors import _run_dask, _run_in_process, _run_processes
from .inputs import BatchItem, _rel, distinct_stems
from .progress import BatchProgress, _Tracker
from .resume import _completed_row, _remove_stale_temporaries, _restore_thumbnails
from .summary import BatchInterrupted, BatchReport, _blank_row, _jsonable, _write_summaries
from .windowed import MIN_WORKER_MEMORY, worker_budget
from .work import _Task


logger = logging.getLogger(__name__)

SHARED_MODEL = "shared_model.npz"
_SEGMENT_DEFAULTS = {n: p.default for n, p in inspect.signature(segment).parameters.items()}


def _check_same_shared_model(path, model, extractor, segment_kwargs):
    """Refuse to resume with a shared model fitted under other options."""
    options = {**_SEGMENT_DEFAULTS, **segment_kwargs}
    wanted = {
        "n_components": options["n_components"],
        "covariance_type": options["covariance_type"],
        "features": FeatureExtractor(options["features"], pca=options["pca"]).spec_string,
    }
    found = {"n_components": model.n_components, "covariance_type": model.covariance_type,
             "features": extractor.spec_string}
    if wanted["features"] == "auto":
        found["features"] = "auto"  # resolved per image kind: not comparable
    differ = [f"{k}={found[k]} (this run: {wanted[k]})" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise GmmsegError(f"{path}: shared model was fitted with {', '.join(differ)}; "
                          "use overwrite=True to refit it")


def run_batch(items: Sequence[BatchItem], out_dir: str | os.PathLike, *,
              segment_kwargs: Mapping | None = None, save_kwargs: Mapping | None = None,
              read_kwargs: Mapping | None = None, jobs: int | None = None,
              scheduler: str | None = None, threads: int | None = None, resume: bool = False,
              overwrite: bool = False, model: GaussianMixture | None = None,
              feature_extractor: FeatureExtractor | None = None, shared_model: bool = False,
              per_image: int | None = DEFAULT_PER_IMAGE, thumbnails: bool = True,
              max_memory: int | str | None = None,
              progress: Callable[[BatchProgress], None] | None = None) -> BatchReport:
    """Segment many inputs, each in isolation, and write the batch summary.

    For every item, ``gmmseg.segment(path, **segment_kwargs)`` then
    ``Segmentation.save(out_dir / item.rel_dir, item.stem, ...)``.  An input
    that fails gets its one-line reason in the summary and the batch goes
    on; warnings (e.g. EM not converged) are recorded in its row.

    Parameters
    ----------
    items : sequence of BatchItem
        From :func:`find_inputs` or :func:`items_from_files`; output names
        that would clash are told apart (``distinct_stems``: ``coffee_png``).
    out_dir : path
        Created if needed.  Nothing is written outside it (output folders
        that resolve elsewhere are refused) and no input is ever replaced.
    segment_kwargs : mapping, optional
        Keyword arguments of :func:`gmmseg.segment` (``n_components``,
        ``features``, ...); ``n_jobs`` defaults to ``threads``.
    save_kwargs : mapping, optional
        ``proba``, ``log_likelihood``, ``alpha`` of :meth:`Segmentation.save`.
    read_kwargs : mapping, optional
        Passed to :func:`gmmseg.read_image` (``bands``, ``nodata``, ...).
    jobs : int, optional
        Worker processes or local Dask workers (default: all cores; 1: here).
    scheduler : str, optional
        None: local processes; ``"local"``: a ``distributed.LocalCluster`` of
        ``jobs`` single-threaded workers; an address (``"tcp://host:8786"``):
        a Dask cluster that sees the inputs and ``out_dir`` at the same paths.
    threads : int, optional
        Threads per worker for EM (``n_jobs``) and OpenCV (BLAS: one).
        Default: cores // jobs locally, 1 on a remote cluster.  The same seed
        and threads give byte-identical label maps, locally and on Dask.
    resume : bool, default=False
        Skip inputs whose outputs are complete (the report, written last,
        parses and every output exists); redo the others, replacing what an
        interrupted run left, and delete a killed run's temporaries
        (``.{name}.tmp-XXXXXXXX``; every file is written to one and renamed).
    overwrite : bool, default=False
        Replace existing outputs (else such an input fails, "output exists").
    model, feature_extractor : optional
        Apply this fitted mixture (and extractor; default: the one in
        ``model.metadata_``) to every input.  Inputs it does not fit fail
        ("model expects 3 channels, image has 6").
    shared_model : bool, default=False
        Fit one mixture on up to ``per_image`` pixels of every input
        (:func:`gmmseg.pipeline.fit_shared_model`), save it as
        ``out_dir/shared_model.npz`` (reused by ``resume``), apply it to all.
    per_image : int or None, default=20000
        Pixels drawn from each image for the shared model.
    thumbnails : bool, default=True
        Write gallery thumbnails under ``out_dir/thumbs/``.
    max_memory : int or str, optional
        The batch's budget (default :func:`~gmmseg.pipeline.windowed.check_max_memory`),
        divided among the workers that run at once (fewer if a share would
        be under 256 MiB).  An input beyond its share is segmented window by
        window in its worker (``segment_windowed``; its row's ``windows``);
        with a given or shared model it is segmented in memory, as without
        a budget, with a warning (the windowed path fits its own model).
    progress : callable, optional
        ``progress(BatchProgress)``, called in this process.

    Returns
    -------
    BatchReport
        Rows in the order of ``items``; ``batch_summary.csv``,
        ``batch_summary.json`` and ``index.html`` are written into ``out_dir``.

    Raises
    ------
    BatchInterrupted
        On Ctrl-C or an exception from ``progress``: pending inputs are
        cancelled (status ``"cancelled"``), running ones finish, the summary
        is written, then this is raised with ``.report``.
    GmmsegError
        The shared model cannot be fitted or exists (without ``resume`` or
        ``overwrite``), or the Dask scheduler cannot be reached.
    """
    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    items, out_dir = list(items), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    segment_kwargs, save_kwargs, read_kwargs = (
        dict(segment_kwargs or {}), dict(save_kwargs or {}), dict(read_kwargs or {}))
    budget = check_max_memory(max_memory)
    given_threads, (jobs, threads) = threads, _workers(jobs, threads, scheduler, segment_kwargs)
    items = distinct_stems(items)
    rows: list[dict | None] = [None] * len(items)
    model_file = out_dir / SHARED_MODEL if shared_model and model is None else None
    model, feature_extractor = _batch_model(
        model, feature_extractor, model_file, items, segment_kwargs, read_kwargs, per_image,
        resume, overwrite, progress)
    if resume:
        _resume(items, rows, out_dir, save_kwargs, read_kwargs, overwrite, thumbnails,
                n_components=None if model is not None else segment_kwargs.get(
                    "n_components", _SEGMENT_DEFAULTS["n_components"]))
    work = _work_list(items, rows, out_dir)
    jobs, threads, share = _within_budget(budget, jobs, threads, given_threads, scheduler,
                                          segment_kwargs, len(work))
    # With resume, what is left to do has no complete outputs: a part written
    # before an interruption is replaced.
    task = _Task(str(out_dir), segment_kwargs, save_kwargs, read_kwargs, overwrite or resume,
                 threads, model, feature_extractor, thumbnails, _workers_log_level(scheduler),
                 share)
    options = _jsonable({
        "segment": segment_kwargs, "save": save_kwargs, "read": read_kwargs, "jobs": jobs,
        "threads": threads, "scheduler": scheduler, "resume": resume, "overwrite": overwrite,
        "shared_model": _rel(model_file, out_dir) if model_file else None,
        "pretrained_model": model is not None, "max_memory": budget, "worker_memory": share})
    summary = (items, rows, out_dir, t_start, started, options, model_file)
    return _execute_and_summarise(work, task, rows, scheduler, jobs, progress, summary)


def _execute_and_summarise(work, task, rows, scheduler, jobs, progress, summary):
    """Run the work, then write the summary: also when interrupted or failing."""
    try:
        _execute(work, task, rows, scheduler, jobs, progress)
    except KeyboardInterrupt as err:
        raise BatchInterrupted(_finish(*summary, interrupted=True)) from err
    except Exception:
        # E.g. the progress callback failed: keep what finished, then report it.
        _finish(*summary, interrupted=True)
        raise
    return _finish(*summary, interrupted=False)


def _workers(jobs, threads, scheduler, segment_kwargs):
    """``(jobs, threads)``: worker processes and threads in each, not oversubscribing cores."""
    if jobs is not None and (isinstance(jobs, bool) or int(jobs) < 1):
        raise ValueError(f"jobs must be a positive number of workers, got {jobs!r}")
    jobs = int(jobs) if jobs else available_cpus()
    if threads is None:
        threads = segment_kwargs.get("n_jobs") or (
            1 if scheduler not in (None, "local") else max(1, available_cpus() // jobs))
    return jobs, int(threads)


def _within_budget(budget, jobs, threads, given_threads, scheduler, segment_kwargs, n_work):
    """``(jobs, threads, share)``: fewer workers (with more threads) if ``budget`` holds fewer."""
    at_once, share = worker_budget(budget, jobs, n_work)
    if at_once < min(jobs, n_work):
        logger.warning("max_memory=%s gives %s at least %s each: running %d at once, not %d",
                       format_bytes(budget), counted(at_once, "worker"),
                       format_bytes(MIN_WORKER_MEMORY), at_once, min(jobs, n_work))
        jobs, threads = _workers(at_once, given_threads, scheduler, segment_kwargs)
    return jobs, threads, share


def _workers_log_level(scheduler):
    """gmmseg's logging level here, for the workers a local run starts; None on a remote cluster."""
    return logging.getLogger("gmmseg").getEffectiveLevel() if scheduler in (None, "local") else None


def _resume(items, rows, out_dir, save_kwargs, read_kwargs, overwrite, thumbnails,
            n_components):
    """Remove a killed run's temporaries; unless ``overwrite``, fill complete inputs' rows."""
    _remove_stale_temporaries(out_dir, items)
    if overwrite:
        return
    if not isinstance(n_components, (int, np.integer)):
        n_components = None  # a model given, "auto" or a list of K: any K is complete
    for i, item in enumerate(items):
        if rows[i] is not None:
            continue
        row = rows[i] = _completed_row(item, out_dir, save_kwargs, n_components)
        if row and row["status"] == "skipped" and thumbnails and not row["thumbnails"]:
            _restore_thumbnails(row, item, out_dir, read_kwargs)


def _batch_model(model, extractor, model_file, items, segment_kwargs, read_kwargs, per_image,
                 resume, overwrite, progress):
    """``(model, extractor)`` applied to every input: given, shared (fitted or reused) or None.

    """
    if model_file is None:
        if model is not None and extractor is None:
            extractor = stored_feature_extractor(model)
        return model, extractor
    paths = [item.path for item in items]
    return _shared_model(model_file, paths, segment_kwargs, read_kwargs, per_image=per_image,
                         resume=resume, overwrite=overwrite, progress=progress)


def _shared_model(model_file, paths, segment_kwargs, read_kwargs, *, per_image, resume,
                  overwrite, progress):
    """The shared model of a batch: reused from ``model_file`` on resume, else fitted and saved."""
    if resume and model_file.exists():
        model, extractor = load_shared_model(model_file)
        _check_same_shared_model(model_file, model, extractor, segment_kwargs)
        return model, extractor
    if model_file.exists() and not overwrite:
        raise OutputExistsError(
            f"{model_file}: shared model exists (use resume=True to reuse it, "
            "overwrite=True to refit it)")
    tracker = _Tracker("fit", len(paths), progress)

    def on_input(path, error):
        tracker.finished({"input": path, "status": "failed" if error else "ok", "error": error})

    tracker.start()
    model, extractor = fit_shared_model(
        paths, per_image=per_image, read_kwargs=read_kwargs, on_input=on_input,
        **{k: v for k, v in segment_kwargs.items() if k in MODEL_OPTIONS})
    save_shared_model(model_file, model, extractor, overwrite=True)
    return model, extractor


def _work_list(items, rows, out_dir):
    """``(index, item, protected)`` of every input still to do.

    ``protected`` holds the inputs that live in the item's output folder:
    an output must never replace one.
    """
    inputs_by_folder: dict[Path, set[str]] = {}
    for item in items:
        real = real_path(item.path)
        inputs_by_folder.setdefault(real.parent, set()).add(str(real))
    work = []
    for i, item in enumerate(items):
        if rows[i] is None:
            folder = real_path(out_dir / item.rel_dir)
            work.append((i, item, frozenset(inputs_by_folder.get(folder, ()))))
    return work


def _execute(work, task, rows, scheduler, jobs, progress):
    """Run ``work`` on the chosen executor, filling ``rows`` and reporting progress."""
    tracker = _Tracker("segment", len(rows), progress,
                       skipped=sum(1 for r in rows if r is not None and r["status"] == "skipped"))
    tracker.failed = sum(1 for r in rows if r is not None and r["status"] == "failed")

    def harvest(index, row):
        if rows[index] is None:
            rows[index] = row

    def record(index, row):
        harvest(index, row)
        tracker.finished(row)

    tracker.start()
    if not work:
        return
    if scheduler is not None:
        _run_dask(work, task, scheduler, jobs, record, harvest, connected=tracker.connected)
    elif jobs == 1 or len(work) == 1:
        _run_in_process(work, task, record)
    else:
        _run_processes(work, task, min(jobs, len(work)), record, harvest)


def _finish(items, rows, out_dir, t_start, started, options, model_file, *, interrupted):
    for i, item in enumerate(items):
        if rows[i] is None:
            row = _blank_row(item)
            row.update(status="cancelled", error="not processed: the batch was interrupted")
            rows[i] = row
    report = BatchReport(rows, out_dir, time.perf_counter() - t_start, interrupted,
                         model_file, options)
    _write_summaries(report, started)
    return report
