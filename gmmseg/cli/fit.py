"""``gmmseg fit`` and ``gmmseg apply``: the two halves of one shared model.

``fit`` pools pixels from many inputs into one mixture and saves it;
``apply`` segments inputs with that file, so label k means the same class
in all of them.  Owns the model file's checks made before any work (its
suffix, refusing to overwrite) and what the two commands print.  It must
not fit, save, load or segment itself: the library's ``fit_shared_model``,
``save_shared_model``, ``load_shared_model`` and ``run_batch`` do.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import GmmsegError, counted, failure_reason
from ._errors import cli_text, echo_warnings, held_warnings, in_flags
from ._help import GroupedCommand
from .batch import run_batch_command
from .options import (
    batch_options,
    covariance_option,
    em_options,
    feature_fit_options,
    label_field_options,
    n_components_option,
    overwrite_option,
    per_image_option,
    preset_option,
    reader_options,
    threads_option,
    verbosity_options,
)
from .presets import given_only

FIT_EXAMPLES = """
gmmseg fit day1/*.tif day2/*.tif -k 6 -o landcover.npz
gmmseg fit coffee.png astronaut.png -k 5 --per-image 50000 -o photos.npz
gmmseg fit cells/*.tif --preset fluorescence -o cells.npz
"""
APPLY_EXAMPLES = """
gmmseg apply landcover.npz day3/*.tif -o results/
gmmseg apply photos.npz coffee.png -o out --regions off
"""


@click.command(cls=GroupedCommand, epilog=FIT_EXAMPLES)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file to write (.npz or .json).")
@reader_options
@preset_option
@n_components_option(auto=False)
@covariance_option()
@feature_fit_options
@em_options
@per_image_option("Pixels drawn from each image.")
@overwrite_option("an existing model file")
@verbosity_options
def fit(inputs, output, read_kwargs, preset, n_components, covariance_type, features,
        pca, seed, max_fit_samples, init_params, n_init, max_iter, tol, threads, per_image,
        overwrite):
    """Fit one mixture on pixels pooled from INPUTS and save it (for `apply`).

    The model file records its feature specification, so `apply` computes
    the same features and refuses inputs they do not fit.
    """
    from ..pipeline import (
        MODEL_OPTIONS,
        fit_shared_model,
        preset_arguments,
        save_shared_model,
    )

    options = dict(n_components=n_components, features=features, pca=pca,
                   covariance_type=covariance_type, random_state=seed,
                   max_fit_samples=max_fit_samples, init_params=init_params, n_init=n_init,
                   max_iter=max_iter, tol=tol, n_jobs=threads)
    if preset is not None:
        try:
            options, _ = preset_arguments(preset, given_only(options, preset),
                                          accepted=MODEL_OPTIONS, method="mixture", what="fit")
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="'--preset'") from err
    if output.suffix.lower() not in (".npz", ".json"):
        raise click.BadParameter(f"{output}: a model file ends in .npz or .json",
                                 param_hint="'-o' / '--output'")
    if output.exists() and not overwrite:
        raise click.ClickException(f"{output}: output exists (use --overwrite)")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with held_warnings() as caught:
            model, extractor = fit_shared_model(inputs, per_image=per_image,
                                                read_kwargs=read_kwargs, **options)
            save_shared_model(output, model, extractor, overwrite=overwrite)
    except (GmmsegError, ValueError, OSError) as err:
        raise click.ClickException(cli_text(err)) from err
    echo_warnings(caught)
    skipped = model.metadata_.get("shared_fit", {}).get("skipped", [])
    for path, reason in skipped:
        click.echo(f"error: {path}: {reason}", err=True)
    click.echo(f"{output}: {counted(model.n_components, 'component')} on features "
               f"{extractor.spec_string!r} from {len(inputs) - len(skipped)} of "
               f"{counted(len(inputs), 'input')}")
    if skipped:
        sys.exit(1)


@click.command(cls=GroupedCommand, epilog=APPLY_EXAMPLES)
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@reader_options
@batch_options
@label_field_options
@threads_option
@verbosity_options
def apply(model_file, inputs, read_kwargs, run, min_region_size, smoothing, connectivity,
          threads):
    """Segment INPUTS with a model saved by `fit` (same labels, same classes)."""
    from ..batch import items_from_files
    from ..pipeline import load_shared_model

    try:
        model, extractor = load_shared_model(model_file)
        items = items_from_files(inputs)
    except Exception as err:  # a model file of any kind of damage: one line, no traceback
        message = in_flags(failure_reason(err))
        if str(model_file) not in message:
            message = f"{model_file}: {message}"
        raise click.ClickException(message) from err
    run_batch_command(
        items, **run, threads=threads, read_kwargs=read_kwargs, model=model,
        feature_extractor=extractor,
        segment_kwargs=dict(min_region_size=min_region_size, smoothing=smoothing,
                            connectivity=connectivity))
