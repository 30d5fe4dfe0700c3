"""Many inputs: find them, segment them in parallel, resume, summarise.

``find_inputs`` (or ``items_from_files``) lists the inputs as
:class:`BatchItem` s; :func:`run_batch` segments each with
:func:`gmmseg.segment` and :meth:`Segmentation.save` in local worker
processes or on a Dask cluster, isolates per-file failures, skips complete
outputs on ``resume``, and writes ``batch_summary.csv``,
``batch_summary.json`` and an ``index.html`` gallery into the output folder.
One model for all inputs (``shared_model=True``) is fitted by
:func:`gmmseg.pipeline.fit_shared_model`.

This package prints nothing: progress goes to a callback that receives a
:class:`BatchProgress` (the CLI turns it into a progress bar).

Modules: ``inputs`` (which files, where their outputs go), ``runner``
(``run_batch``), ``work`` (one input in a worker), ``windowed`` (an input
beyond a worker's share of ``max_memory``, window by window), ``executors``
(local processes, Dask), ``resume``, ``progress``, ``summary`` (rows,
CSV/JSON) and ``gallery`` (thumbnails, ``index.html``).
"""

from .gallery import GALLERY, THUMBS_DIR
from .inputs import BatchItem, distinct_stems, find_inputs, items_from_files
from .progress import BatchProgress, format_progress
from .runner import SHARED_MODEL, run_batch
from .summary import SUMMARY_CSV, SUMMARY_JSON, BatchInterrupted, BatchReport

__all__ = [
    "GALLERY",
    "SHARED_MODEL",
    "SUMMARY_CSV",
    "SUMMARY_JSON",
    "THUMBS_DIR",
    "BatchInterrupted",
    "BatchItem",
    "BatchProgress",
    "BatchReport",
    "distinct_stems",
    "find_inputs",
    "format_progress",
    "items_from_files",
    "run_batch",
]
