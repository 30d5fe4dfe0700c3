"""How a gmmseg process logs: gmmseg's own lines, other libraries' kept to one line.

The readers and the Dask cluster gmmseg uses log on their own: pydicom logs
a whole traceback before gmmseg reports the file it could not decode,
tifffile warns twice about the TIFF gmmseg then refuses, Pillow logs every
PNG chunk at debug level, Dask logs each worker it starts.  gmmseg reports
what matters itself, in one line, so :func:`configure_logging` installs one
handler that shows gmmseg's records at the chosen level and other
libraries' records as gmmseg debug lines: one line each (no traceback),
repeats dropped, prefixed with the logger's name.  Dask's own INFO records
(scheduler, workers: what the run is doing where) show from INFO (``-v``).

Used by the command line and by the local worker processes of a batch;
library calls never configure logging.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]

#: gmmseg's own logger; records of its children show at their level.
OWN_LOGGER = "gmmseg"
#: Libraries whose INFO records describe the run gmmseg started (a Dask
#: cluster): shown at INFO.  Every other library's records are gmmseg debug.
_RUN_LOGGERS = ("distributed",)


def _is_own(name: str) -> bool:
    return name == OWN_LOGGER or name.startswith(OWN_LOGGER + ".")


def _origin(name: str) -> str:
    return name.split(".", 1)[0]


class _Handler(logging.StreamHandler):
    """Writes gmmseg's records as ``level: message``; other libraries' as one debug line."""

    def __init__(self, stream, level: int):
        super().__init__(stream)
        self.follow_stderr = stream is None
        self.threshold = level
        self._last_foreign = None
        self.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        if self.follow_stderr:
            # The stderr of now, not of when logging was set up: a test
            # runner swaps it for each command it runs.
            self.stream = sys.stderr
        super().emit(record)

    def handle(self, record: logging.LogRecord) -> bool:
        if not _is_own(record.name):
            record = self._as_own(record)
            if record is None:
                return False
        if record.levelno < self.threshold:
            return False
        return super().handle(record)

    def _as_own(self, record: logging.LogRecord) -> logging.LogRecord | None:
        """Another library's record as a one-line gmmseg record, or None to drop it."""
        if record.levelno < logging.INFO:
            return None  # Pillow's chunks, tifffile's parsing: never gmmseg's business
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a broken record of another library: its raw text
            text = str(record.msg)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = f"{record.name}: {lines[0] if lines else '(empty message)'}"
        if text == self._last_foreign:
            return None  # tifffile logs the same warning once per attempt
        self._last_foreign = text
        level = (logging.INFO if _origin(record.name) in _RUN_LOGGERS else logging.DEBUG)
        # A copy: other handlers (pytest's, a user's) see the record unchanged.
        return logging.makeLogRecord({
            **record.__dict__, "msg": text, "args": None, "levelno": level,
            "levelname": logging.getLevelName(level), "exc_info": None, "exc_text": None,
            "stack_info": None})


class _Formatter(logging.Formatter):
    """``warning: message`` -- the style of the CLI's ``error:`` lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(level: int = logging.WARNING, stream=None) -> None:
    """Send this process's log records to ``stream`` (stderr) as gmmseg's.

    gmmseg's records show from ``level`` on; other libraries' records show
    as one-line gmmseg debug records (Dask's as INFO), their DEBUG records
    never.  Calling it again replaces the handler it installed before, and
    leaves other handlers (a test framework's) alone.

    Parameters
    ----------
    level : int, default=logging.WARNING
        ``logging.DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``.
    stream : file-like, optional
        Default: ``sys.stderr`` at the time of each record.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    root.addHandler(_Handler(stream, level))
    # Other libraries' DEBUG records are never shown: do not even make them
    # (Pillow makes one per PNG chunk).  Their INFO records are, with -v.
    root.setLevel(logging.INFO if level <= logging.INFO else logging.WARNING)
    logging.getLogger(OWN_LOGGER).setLevel(level)
