"""The ``gmmseg`` command line: thin commands over :mod:`gmmseg.pipeline`.

Exit codes: 0 all good, 1 a runtime failure (any input that failed), 2 bad
usage.  Option defaults are read from the API's signatures.

Layout, as rasterio's ``rio/``: :mod:`.options` defines every option that
more than one command takes, once; :mod:`._errors` reports a failed input;
each command has its own module (``segment``, ``select_k``, ``batch``,
``fit`` with ``apply``, ``info``, ``presets``).  This module only holds the group
:func:`main` (the ``gmmseg`` console script) and registers the commands.
"""

from __future__ import annotations

import click

from .. import __version__
from . import batch, fit, info, presets, segment, select_k
from ._help import CommandList
from ._errors import in_cli_style

__all__ = ["main"]


class _Group(CommandList):
    """The ``gmmseg`` group: click's usage errors in the CLI's style (``error:``)."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as err:
            raise in_cli_style(err) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.ClickException as err:
            raise in_cli_style(err) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gmmseg")
def main():
    """Gaussian-mixture image segmentation.

    Each command has its own help: gmmseg COMMAND --help.  Shell completion
    for bash: eval "$(_GMMSEG_COMPLETE=bash_source gmmseg)" (zsh_source,
    fish_source for zsh and fish).
    """


for _command in (segment.segment, select_k.select_k, batch.batch, fit.fit, fit.apply,
                 info.info, presets.presets):
    main.add_command(_command)
del _command
