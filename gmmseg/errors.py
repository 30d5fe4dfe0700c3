"""Exceptions and warnings shared by every gmmseg module."""


class GmmsegError(Exception):
    """Base class of the errors gmmseg raises on purpose."""


class ImageReadError(GmmsegError, ValueError):
    """An input file cannot be read as an image; the message names the file."""


class OutputExistsError(GmmsegError, FileExistsError):
    """An output file exists and overwriting was not requested."""


class ModelFileError(GmmsegError, ValueError):
    """A saved model file is malformed, tampered with or of another version."""


class TooFewDistinctRowsError(GmmsegError, ValueError):
    """A mixture was asked for more components than the data has distinct rows."""


class NotFittedError(GmmsegError, ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit``.

    A ``ValueError`` and an ``AttributeError``, as scikit-learn's
    ``NotFittedError`` is, so that code written for either library catches it
    (and ``hasattr`` on a fitted-only property is ``False``).
    """


class LargeModelWarning(UserWarning):
    """n_components is beyond what the data support, or the fit will be slow; said before it."""


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the log-likelihood converged."""


def counted(n: int, noun: str, plural: str | None = None, *, grouped: bool = False) -> str:
    """``n`` and ``noun``, the noun in the plural unless ``n`` is 1: messages never say "(s)".

    ``plural`` defaults to ``noun + "s"``; ``grouped`` writes thousands
    separators.

    Examples
    --------
    >>> counted(1, "channel"), counted(3, "channel"), counted(0, "series", "series")
    ('1 channel', '3 channels', '0 series')
    >>> counted(150000, "fit pixel", grouped=True)
    '150,000 fit pixels'
    """
    word = noun if n == 1 else (plural or noun + "s")
    return f"{n:,} {word}" if grouped else f"{n} {word}"


def one_line(err: BaseException, *, with_type: bool = False) -> str:
    """An exception's text on one line (its type's name if it has no text).

    ``with_type`` prefixes the type's name, for errors of other libraries
    whose text alone does not say what went wrong.
    """
    text = " ".join(str(err).split())
    if with_type and text:
        return f"{type(err).__name__}: {text}"
    return text or type(err).__name__


def failure_reason(err: BaseException, path=None) -> str:
    """Why an input failed, in one line, without a leading ``path: ``.

    Errors gmmseg expects (its own, ``ValueError``, ``OSError``) say what
    they say; running out of memory and anything else are named as such, so
    that a summary row never passes off a bug as a bad input.
    """
    text = one_line(err)
    if path is not None:
        text = text.removeprefix(f"{path}: ")
    if isinstance(err, MemoryError):
        return f"out of memory ({text})"
    if not isinstance(err, (GmmsegError, ValueError, OSError)):
        return f"internal error ({type(err).__name__}: {text})"
    return text
