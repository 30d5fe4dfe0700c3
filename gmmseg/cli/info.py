"""``gmmseg info``: what gmmseg reads from files, one line each.

Owns that loop and its exit code (1 when any file cannot be read).  It must
not describe images itself: that is :func:`gmmseg.io.describe`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._errors import report_failure
from ._help import GroupedCommand
from .options import reader_options, verbosity_options

EXAMPLES = """
gmmseg info scene.tif scan.nii.gz
gmmseg info dicom_folder/ --series 1.2.840.113619.2.55.3
"""


@click.command(cls=GroupedCommand, epilog=EXAMPLES)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@reader_options
@verbosity_options
def info(files, read_kwargs):
    """Print what gmmseg reads from FILES: shape, type, channels, geometry, valid pixels."""
    from ..io import describe, read_image

    failed = 0
    for path in files:
        try:
            img = read_image(path, **read_kwargs)
            click.echo(f"{path}: {describe(img)}")
        except Exception as err:
            report_failure(path, err)
            failed += 1
    if failed:
        sys.exit(1)
