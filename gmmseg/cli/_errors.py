"""How a command reports an input that failed: one line on stderr.

Owns the wording of that line and which exceptions count as expected (the
traceback of an unexpected one says "internal error", and comes with ``-v``).
It must not decide exit codes or catch anything: the commands do both.
"""

from __future__ import annotations

import logging

import click

from ..errors import GmmsegError, one_line

logger = logging.getLogger("gmmseg")


def report_failure(path, err):
    """One line on stderr; the traceback only with -v."""
    expected = isinstance(err, (GmmsegError, ValueError, OSError, MemoryError))
    message = one_line(err)
    if not expected:
        message = f"internal error ({type(err).__name__}: {message})"
    if str(path) not in message:
        message = f"{path}: {message}"
    click.echo(f"error: {message}", err=True)
    if click.get_current_context().meta.get("gmmseg.verbose"):
        logger.error("traceback", exc_info=err)
