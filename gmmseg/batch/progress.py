"""Where a batch stands: the events its ``progress`` callback receives.

The batch prints nothing itself; the CLI turns these events into a progress
bar or plain log lines (:func:`format_progress`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands; passed to the ``progress`` callback.

    The callback is called in the calling process (never in a worker):
    once when a phase starts (``row`` None, ``skipped`` already counted)
    and once after every input of the phase finishes, in completion order.
    Whatever it raises aborts the batch like Ctrl-C (see :func:`run_batch`).

    Attributes
    ----------
    phase : {"fit", "segment"}
        ``"fit"``: drawing pixels for a shared model (one event per input
        read); ``"segment"``: segmenting and writing.
    total : int
        Inputs in this phase.
    ok, failed, skipped : int
        Inputs finished so far; ``skipped`` were complete from an earlier
        run (``resume``).
    elapsed : float
        Seconds since the phase started.
    row : dict or None
        The summary row of the input that just finished (see
        :class:`BatchReport`); in the fit phase only ``input``, ``status``
        and ``error``.
    dashboard : str or None
        On a Dask cluster with a dashboard, its address, from the event
        right after connecting on (one with ``row`` None).
    """

    phase: str
    total: int
    ok: int
    failed: int
    skipped: int
    elapsed: float
    row: dict | None = None
    dashboard: str | None = None

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped

    @property
    def remaining(self) -> int:
        return self.total - self.done

    @property
    def eta(self) -> float | None:
        """Seconds left, from this run's rate; None before the first input finished."""
        processed = self.ok + self.failed
        if processed == 0:
            return None if self.remaining else 0.0
        return self.elapsed / processed * self.remaining


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def format_progress(p: BatchProgress) -> str:
    """One plain log line for a progress event (for output that is not a terminal).

    Examples
    --------
    >>> format_progress(BatchProgress("segment", 10, 3, 1, 2, 8.0,
    ...                 {"input": "a", "status": "failed", "error": "bad"}))
    'segment 6/10: 3 ok, 1 failed, 2 skipped, 4 left, 0:08 elapsed, ETA 0:08 | a: failed: bad'
    """
    text = (f"{p.phase} {p.done}/{p.total}: {p.ok} ok, {p.failed} failed, {p.skipped} skipped, "
            f"{p.remaining} left, {_clock(p.elapsed)} elapsed, ETA {_clock(p.eta)}")
    if p.row is not None:
        text += f" | {p.row['input']}: {p.row['status']}"
        if p.row.get("error"):
            text += f": {p.row['error']}"
    return text


class _Tracker:
    def __init__(self, phase, total, callback, skipped=0):
        self.phase, self.total, self.callback = phase, total, callback
        self.ok = self.failed = 0
        self.skipped = skipped
        self.dashboard = None
        self.t0 = time.perf_counter()

    def _emit(self, row):
        if self.callback is not None:
            self.callback(BatchProgress(self.phase, self.total, self.ok, self.failed,
                                        self.skipped, time.perf_counter() - self.t0, row,
                                        self.dashboard))

    def start(self):
        self.t0 = time.perf_counter()
        self._emit(None)

    def connected(self, dashboard):
        """The executor reached its Dask cluster: say where its dashboard is."""
        if dashboard:
            self.dashboard = dashboard
            self._emit(None)

    def finished(self, row):
        if row["status"] == "ok":
            self.ok += 1
        else:
            self.failed += 1
        self._emit(row)
