"""Where the windows of :mod:`gmmseg.pipeline.windowed` run: here, local threads, or Dask.

Owns :func:`run_windows`: call a window task on every window and hand each
result to ``consume`` in the calling thread (which alone writes files), in
completion order, with at most a bounded number of windows in flight so
that memory stays within the budget.

- ``workers=1``: one window after another in the calling thread.
- ``workers=N``: a thread pool (NumPy, OpenCV, GDAL and the E-step release
  the GIL); BLAS and OpenCV are held to one thread per worker so the
  machine is not oversubscribed.
- ``scheduler``: ``dask.distributed`` -- ``"local"`` starts a
  ``LocalCluster``, anything else is a scheduler address.  The task's
  shared state (the fitted model and extractor) is scattered to the
  workers once (``Client.scatter(broadcast=True)``); every window is a
  task (``Client.submit``), results come back through ``as_completed``.
  Workers read the windows from the file themselves: the input must be at
  the same path on every worker.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging

from ..errors import GmmsegError, one_line

logger = logging.getLogger(__name__)


def _run_here(fn, task, jobs, consume, progress):
    for i, args in enumerate(jobs):
        consume(fn(task, *args))
        if progress:
            progress(i + 1, len(jobs))


@contextlib.contextmanager
def _one_thread_each():
    """BLAS and OpenCV single-threaded while several windows run at once."""
    import cv2
    from threadpoolctl import threadpool_limits

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        cv2.setNumThreads(before)


def _run_threads(fn, task, jobs, consume, progress, workers):
    done = 0
    with _one_thread_each(), concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = set()
        queue = iter(jobs)
        try:
            while True:
                # One window in flight per worker, plus one being written.
                for args in queue:
                    pending.add(pool.submit(fn, task, *args))
                    if len(pending) > workers:
                        break
                if not pending:
                    return
                finished, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    consume(future.result())
                    done += 1
                    if progress:
                        progress(done, len(jobs))
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def connect(scheduler, workers, *, processes=True, dashboard_address=None,
            what="running windows on Dask"):
    """A ``distributed.Client`` for ``scheduler`` (``"local"``: a new LocalCluster).

    ``workers`` worker processes (or threads, ``processes=False``) of one
    thread each for a local cluster.  Returns ``(client, cluster)``;
    ``cluster`` is None for an address or a given ``Client``.  Errors are
    one-line :class:`GmmsegError` s (``what`` names the caller).
    """
    try:
        import distributed
    except ImportError as err:
        raise GmmsegError(f"{what} needs dask.distributed: pip install 'gmmseg[dask]'") from err
    if isinstance(scheduler, distributed.Client):
        return scheduler, None
    cluster = None
    try:
        if scheduler == "local":
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=processes,
                dashboard_address=dashboard_address)
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(scheduler)
    except Exception as err:
        if cluster is not None:
            cluster.close()
        raise GmmsegError(f"cannot connect to the Dask scheduler {scheduler}: "
                          f"{one_line(err)}") from err
    return client, cluster


def _run_dask(fn, task, jobs, consume, progress, client):
    import distributed

    n_workers = max(1, sum(w.get("nthreads", 1) for w in
                           client.scheduler_info()["workers"].values()))
    shared = client.scatter(task, broadcast=True, hash=False)
    queue = iter(jobs)
    # At most two windows per worker thread in flight: results come back to
    # be written here, and must not pile up in memory.  range first: zip
    # stops on it without drawing a window from the queue.
    running = distributed.as_completed(
        [client.submit(fn, shared, *args, pure=False)
         for _, args in zip(range(2 * n_workers), queue)])
    for done, future in enumerate(running, start=1):
        result = future.result()
        future.release()
        for args in queue:
            running.add(client.submit(fn, shared, *args, pure=False))
            break
        consume(result)
        if progress:
            progress(done, len(jobs))


@contextlib.contextmanager
def window_runner(*, workers=1, scheduler=None, processes=True):
    """A ``run(fn, task, jobs, consume, progress=None)`` for the passes of one windowed run.

    ``consume(fn(task, *args))`` is called in this thread for every
    ``args`` in ``jobs``, in completion order.

    Parameters
    ----------
    workers : int
        Windows at once (threads here, or a local cluster's worker processes).
    scheduler : str or distributed.Client, optional
        ``"local"`` or a scheduler address: run on Dask, one client (and
        local cluster) for every pass.
    processes : bool
        A local cluster of processes (True) or of threads in this process.
    """
    client = cluster = None
    if scheduler is not None:
        client, cluster = connect(scheduler, workers, processes=processes)

    def run(fn, task, jobs, consume, progress=None):
        jobs = list(jobs)
        if client is not None:
            _run_dask(fn, task, jobs, consume, progress, client)
        elif workers > 1 and len(jobs) > 1:
            _run_threads(fn, task, jobs, consume, progress, workers)
        else:
            _run_here(fn, task, jobs, consume, progress)

    try:
        yield run
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
