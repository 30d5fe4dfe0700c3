"""Where the inputs run: in this process, in local worker processes, or on Dask.

Each executor takes the same work list and ``record`` / ``harvest``
callbacks; on Ctrl-C pending inputs are dropped and running ones finish.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from ..errors import GmmsegError, one_line
from ..pipeline.windowed import connect
from .summary import _blank_row
from .work import _init_worker, _process, _process_on_dask

logger = logging.getLogger(__name__)


def _run_in_process(work, task, record):
    for index, item, protected in work:
        record(index, _process(item, task, protected))


def _pool_context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        # Forking a process that runs threads (progress bars, BLAS) is unsafe;
        # the fork server starts clean and imports gmmseg once for all workers.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["gmmseg.batch"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_processes(work, task, jobs, record, harvest):
    executor = ProcessPoolExecutor(jobs, mp_context=_pool_context(), initializer=_init_worker,
                                   initargs=(task.threads, task.log_level))
    futures = {}
    try:
        for index, item, protected in work:
            futures[executor.submit(_process, item, task, protected)] = (index, item)
        for future in as_completed(futures):
            index, item = futures[future]
            record(index, _future_row(future, item))
    except BaseException:
        try:
            # Pending inputs are dropped, running ones finish (workers ignore Ctrl-C).
            executor.shutdown(wait=True, cancel_futures=True)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            pass
        for future, (index, item) in futures.items():
            if future.done() and not future.cancelled():
                harvest(index, _future_row(future, item))
        raise
    executor.shutdown(wait=True)


def _future_row(future, item):
    try:
        return future.result()
    except BrokenProcessPool:
        row = _blank_row(item)
        row["error"] = "the worker process died (killed, or out of memory?)"
        return row


def _require_distributed():
    try:
        import distributed
    except ImportError as err:
        raise GmmsegError(
            "running a batch on Dask needs dask.distributed: pip install 'gmmseg[dask]'"
        ) from err
    return distributed


def _dashboard(client, local):
    """The address of the cluster's dashboard, or None where it has none."""
    if local and importlib.util.find_spec("bokeh") is None:
        logger.info("the local Dask cluster has no dashboard: it needs bokeh "
                    "(pip install bokeh)")
        return None
    try:
        return client.dashboard_link
    except (KeyError, AttributeError):  # a scheduler without an HTTP server
        return None


def _run_dask(work, task, scheduler, jobs, record, harvest, connected=None):
    distributed = _require_distributed()
    # Port 0 for a local cluster's dashboard: a free port, so that two
    # batches (or a notebook's cluster) never clash on 8787; it is reported.
    client, cluster = connect(scheduler, jobs, dashboard_address=":0",
                              what="running a batch on Dask")
    if connected is not None:
        connected(_dashboard(client, local=cluster is not None))
    futures = {}
    try:
        work = list(work)
        if work:
            shared = client.scatter(task, broadcast=True)
            submitted = client.map(
                _process_on_dask, [w[1] for w in work], [shared] * len(work),
                [w[2] for w in work], pure=False)
            futures = {f.key: (f, index, item)
                       for f, (index, item, _) in zip(submitted, work)}
        for future in distributed.as_completed([f for f, _, _ in futures.values()]):
            _, index, item = futures[future.key]
            record(index, _dask_row(future, item))
    except BaseException:
        pending = [f for f, _, _ in futures.values() if not f.done()]
        client.cancel(pending)
        for future, index, item in futures.values():
            if future.status == "finished":
                harvest(index, _dask_row(future, item))
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _dask_row(future, item):
    try:
        return future.result()
    except Exception as err:  # KilledWorker, lost connection, ...
        row = _blank_row(item)
        row["error"] = f"Dask task failed ({type(err).__name__}: {one_line(err)})"
        return row
