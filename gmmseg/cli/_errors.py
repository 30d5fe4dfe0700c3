"""How a command reports what went wrong: one line on stderr, in the CLI's words.

Owns the wording of that line, which exceptions count as expected (the
traceback of an unexpected one says "internal error", and comes with ``-v``),
and the translation of the library's hints, which name API parameters
(``overwrite=True``), into the flags a shell user types (``--overwrite``).
It must not decide exit codes or catch anything: the commands do both.
"""

from __future__ import annotations

import logging

import click

from ..errors import failure_reason, one_line

logger = logging.getLogger("gmmseg")

# The library's hints in API words, and the same hint on the command line.
_API_TO_FLAGS = (
    ("a smaller n_components", "a smaller -k"),
    ("overwrite=True", "--overwrite"),
    ("resume=True", "--resume"),
    ("use exclude=", "use --exclude"),
)


def in_flags(text):
    """A library message with its hints in command-line flags.

    Examples
    --------
    >>> in_flags("a.png_report.json: output exists (use overwrite=True)")
    'a.png_report.json: output exists (use --overwrite)'
    """
    for api, flag in _API_TO_FLAGS:
        text = text.replace(api, flag)
    return text


def cli_text(err):
    """An exception (or warning) as one line for the terminal."""
    return in_flags(one_line(err))


def report_failure(path, err):
    """One line on stderr; the traceback only with -v."""
    message = in_flags(failure_reason(err))
    if str(path) not in message:
        message = f"{path}: {message}"
    click.echo(f"error: {message}", err=True)
    if click.get_current_context().meta.get("gmmseg.verbose"):
        logger.error("traceback", exc_info=err)
