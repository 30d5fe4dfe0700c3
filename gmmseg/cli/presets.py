"""``gmmseg presets``, and how a preset meets the options given on the command line.

Owns the ``presets`` command (one line per preset) and :func:`given_only`:
with ``--preset``, only the options the user typed are passed on, so that
the preset's values fill in the rest (the library merges the two; see
:func:`gmmseg.pipeline.presets.preset_arguments`).  It must not know any
preset's contents: those live in :mod:`gmmseg.presets`.
"""

from __future__ import annotations

import click
from click.core import ParameterSource

from ._help import GroupedCommand

EXAMPLES = """
gmmseg presets
gmmseg segment cells.tif --preset fluorescence -o out
gmmseg segment brain.nii.gz --preset t1 -o out
gmmseg segment head.nii.gz --preset t1 --mask brain_mask.nii.gz --smooth 0.5 -o out
"""

#: Keyword arguments whose command-line option has another name.
_OPTION_OF = {"random_state": "seed", "n_jobs": "threads"}


@click.command(cls=GroupedCommand, epilog=EXAMPLES)
def presets():
    """List the presets (--preset NAME): what each is for and what it sets."""
    from ..presets import PRESETS

    width = max(len(name) for name in PRESETS)
    for preset in PRESETS.values():
        values = " ".join(f"{k}={v}" for k, v in preset.settings.items())
        click.echo(f"{preset.name:<{width}}  {preset.summary} [{values}]")


def given_only(kwargs, preset):
    """With a preset, ``kwargs`` without the options left at their defaults.

    Without one, ``kwargs`` unchanged: the defaults are the API's.
    """
    if preset is None:
        return kwargs
    ctx = click.get_current_context()
    kept = {}
    for name, value in kwargs.items():
        source = ctx.get_parameter_source(_OPTION_OF.get(name, name))
        if source is not None and source is not ParameterSource.DEFAULT:
            kept[name] = value
    return kept
