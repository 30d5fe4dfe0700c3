"""How a command reports what went wrong: one line on stderr, in the CLI's words.

Owns the wording of that line, which exceptions count as expected (the
traceback of an unexpected one says "internal error", and comes with ``-v``),
the translation of the library's hints, which name API parameters
(``overwrite=True``), into the flags a shell user types (``--overwrite``),
and one style for every message: ``error:`` and ``warning:`` in lower case,
as gmmseg's per-file lines, git and argparse write them, click's own usage
errors included (:func:`in_cli_style`).  It must not decide exit codes or
catch anything: the commands and the group do both.
"""

from __future__ import annotations

import contextlib
import io
import logging
import types
import warnings

import click

from ..errors import GmmsegError, LargeModelWarning, failure_reason, one_line

logger = logging.getLogger("gmmseg")

# The library's hints in API words, and the same hint on the command line;
# longer phrases first where one contains another.
_API_TO_FLAGS = (
    ("a smaller n_components", "a smaller -k"),
    ("n_components='auto'", "-k auto"),
    ("n_components=", "-k "),
    ("covariance_type=", "--covariance-type "),
    ("overwrite=True", "--overwrite"),
    ("resume=True", "--resume"),
    ("use exclude=", "use --exclude"),
    ("series=UID", "--series UID"),
    ("a larger max_iter or tol", "a larger --max-iter or --tol"),
    ("max_iter=", "--max-iter "),
    ("max_fit_samples=", "--max-fit-samples "),
    ("raise max_memory", "raise --max-memory"),
    ("beyond max_memory", "beyond --max-memory"),
    ("max_memory=", "--max-memory "),
    ("min_region_size needs", "--min-region-size needs"),
    ("leave min_region_size 0", "leave --min-region-size 0"),
    ("use regions='off'", "use --regions off"),
    ("a smaller max_fit_samples", "a smaller --max-fit-samples"),
    ("more than max_pixels=", "more than the limit of "),
    ("gmmseg.batch.find_inputs and run_batch", "gmmseg batch"),
    ("gmmseg.pipeline.select_k", "gmmseg select-k"),
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


@contextlib.contextmanager
def held_warnings(path=None):
    """Catch the warnings of a block: a list of their messages, to print after it succeeds.

    A :class:`~gmmseg.errors.LargeModelWarning` is printed at once instead:
    it announces a long fit before it starts.  A failing input prints its
    one error line and none of its warnings.
    """
    held = []

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LargeModelWarning):
            click.echo(f"warning: {_named(path, cli_text(message))}", err=True)
        else:
            held.append(message)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield held


def echo_warnings(held, path=None):
    """Print warnings :func:`held_warnings` kept, one line each, repeats once."""
    seen = set()
    for message in held:
        text = _named(path, cli_text(message))
        if text not in seen:
            seen.add(text)
            click.echo(f"warning: {text}", err=True)


def _named(path, text):
    """``text`` starting with ``path: ``, unless it names the path already."""
    return text if path is None or str(path) in text else f"{path}: {text}"


def report_failure(path, err):
    """One line on stderr; the traceback of an internal error with -v, of any with -vv."""
    message = in_flags(failure_reason(err))
    if str(path) not in message:
        message = f"{path}: {message}"
    click.echo(f"error: {message}", err=True)
    verbose = click.get_current_context().meta.get("gmmseg.verbose", 0)
    expected = isinstance(err, (GmmsegError, ValueError, OSError))
    if verbose >= 2 or (verbose and not expected):
        logger.info("traceback of the error above", exc_info=err)


def in_cli_style(err):
    """``err`` (a click exception) printing ``error:``, not click's ``Error:``.

    The text is click's own (usage line, help hint, message); only the
    prefix changes, so that every message of the CLI has one style.
    """
    def show(self, file=None):
        buffer = io.StringIO()
        type(self).show(self, buffer)
        text = buffer.getvalue()
        if text.startswith("Error: "):  # a ClickException: its message only
            text = "error: " + text.removeprefix("Error: ")
        else:  # a UsageError: the usage line, the help hint, then the message
            text = text.replace("\nError: ", "\nerror: ", 1)
        click.echo(text, file=file, err=file is None, nl=False)

    err.show = types.MethodType(show, err)
    return err
