"""``gmmseg batch``: segment a folder of images in parallel, and how batches report.

Owns the batch command, its progress display (a tqdm bar on a terminal, log
lines otherwise) and :func:`run_batch_command`, which ``apply`` shares: one
line per failed input, the summary line and the exit code (0, 1 when any
input failed, 130 when interrupted).  It must not find, schedule or segment
inputs itself: that is :mod:`gmmseg.batch`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import GmmsegError, counted
from ._errors import cli_text, in_flags
from ._help import GroupedCommand
from .options import (
    batch_options,
    mask_option,
    max_memory_option,
    model_options,
    per_image_option,
    preset_option,
    reader_options,
    verbosity_options,
)
from .presets import given_only

EXAMPLES = """
gmmseg batch scenes/ -o results/ -k 4 --recursive -j 2
gmmseg batch scenes/ -o results/ -k 4 --include '*.tif' --exclude 'raw/*'
gmmseg batch scenes/ -o results/ -k 4 --resume          # after Ctrl-C or a crash
gmmseg batch scenes/ -o results/ -k 5 --shared-model    # one model, same classes everywhere
gmmseg batch scenes/ -o results/ -k 4 --scheduler local # on a local Dask cluster
gmmseg batch S2/ -o results/ -k 6 -j 2 --max-memory 4GB # 2 GB a worker; larger: windowed
gmmseg batch brains/ -o results/ --preset t1 --recursive # tissue maps for every scan
"""


@click.command(cls=GroupedCommand, epilog=EXAMPLES)
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-r", "--recursive", is_flag=True, help="Also segment images in subfolders.")
@click.option("--include", multiple=True,
              help="Glob pattern of inputs to take (repeatable; default: every file gmmseg "
                   "reads). A pattern with '/' matches the path below INPUT_DIR.")
@click.option("--exclude", multiple=True, help="Glob pattern of inputs to skip (repeatable).")
@reader_options
@mask_option
@preset_option
@model_options
@batch_options
@click.option("--shared-model", is_flag=True,
              help="Fit one mixture on pixels pooled from all inputs and apply it to each, "
                   "so label k means the same class everywhere (saved as shared_model.npz).")
@per_image_option("Pixels drawn from each image for --shared-model.")
@max_memory_option
@verbosity_options
def batch(input_dir, recursive, include, exclude, read_kwargs, mask, preset, n_components,
          features, covariance_type, pca, seed, max_fit_samples, min_region_size, smoothing,
          connectivity, criterion, init_params, n_init, max_iter, tol, threads, run,
          shared_model, per_image, max_memory):
    """Segment every image in INPUT_DIR in parallel into OUT_DIR (same tree).

    Writes each input's label map, overlay and report as `segment` does, plus
    batch_summary.csv, batch_summary.json and an index.html gallery. A failing
    input is listed with its reason and the others go on; the exit code is 1
    if any input failed.  An input beyond its worker's share of --max-memory
    is segmented window by window (a COG label map and an overlay preview).
    """
    from ..batch import find_inputs
    from ..pipeline import preset_arguments

    segment_kwargs = given_only(dict(
        n_components=n_components, features=features, covariance_type=covariance_type,
        pca=pca, random_state=seed, max_fit_samples=max_fit_samples,
        min_region_size=min_region_size, smoothing=smoothing, connectivity=connectivity,
        criterion=criterion, init_params=init_params, n_init=n_init, max_iter=max_iter,
        tol=tol, mask=mask), preset)
    if preset is not None and shared_model:
        # One model for all inputs: the preset's values, resolved here.
        try:
            segment_kwargs, _ = preset_arguments(preset, segment_kwargs, method="mixture")
        except ValueError as err:
            raise click.UsageError(in_flags(str(err))) from err
    elif preset is not None:
        segment_kwargs["preset"] = preset
    if shared_model and not isinstance(segment_kwargs.get("n_components", n_components), int):
        raise click.UsageError("--shared-model needs a fixed -k; choose it with select-k first")
    try:
        items = find_inputs(input_dir, recursive=recursive, include=include or None,
                            exclude=exclude or None, out_dir=run["out_dir"])
    except GmmsegError as err:
        raise click.ClickException(cli_text(err)) from err
    if not items:
        raise click.UsageError(f"{input_dir}: no input images found"
                               + ("" if recursive else " (use --recursive for subfolders)"))
    run_batch_command(
        items, **run, threads=threads, read_kwargs=read_kwargs, shared_model=shared_model,
        per_image=per_image, segment_kwargs=segment_kwargs, max_memory=max_memory)


def run_batch_command(items, out_dir, **kwargs):
    """Run a batch, print failures and a summary, exit 0/1 (130 when interrupted)."""
    from ..batch import BatchInterrupted, run_batch

    progress, close = _progress_printer()
    try:
        report = run_batch(items, out_dir, progress=progress, **kwargs)
    except GmmsegError as err:  # the batch as a whole cannot start (shared model, ...)
        raise click.ClickException(cli_text(err)) from err
    except BatchInterrupted as err:
        report = err.report
        click.echo(f"interrupted: {report.n_ok} done, {report.n_cancelled} not started; "
                   f"summary in {report.summary_csv}; rerun with --resume", err=True)
        sys.exit(130)
    finally:
        close()
    for row in report.rows:
        for w in row.get("warnings") or []:
            click.echo(f"warning: {row['input']}: {w}", err=True)
        if row["status"] == "failed":
            click.echo(f"error: {row['input']}: {in_flags(row['error'])}", err=True)
    quiet = click.get_current_context().meta["gmmseg.quiet"]
    if report.exit_code != 0 or not quiet:
        click.echo(f"{counted(len(report.rows), 'input')}: {report.n_ok} segmented, "
                   f"{report.n_skipped} already complete, {report.n_failed} failed; summary: "
                   f"{report.summary_csv}, gallery: {report.gallery}",
                   err=report.exit_code != 0)
    sys.exit(report.exit_code)


def _progress_printer():
    """A progress callback for batch.run_batch: a tqdm bar on a terminal, else log lines."""
    from ..batch import format_progress

    ctx = click.get_current_context()
    if ctx.meta["gmmseg.quiet"]:
        return None, lambda: None
    shown = set()

    def dashboard(p, echo):
        """The Dask dashboard's address, once; Dask's own log says more with -v."""
        if p.dashboard and p.dashboard not in shown:
            shown.add(p.dashboard)
            echo(f"Dask dashboard: {p.dashboard}")

    if not sys.stderr.isatty():
        def plain(p):
            dashboard(p, lambda text: click.echo(text, err=True))
            if p.row is not None:
                click.echo(format_progress(p), err=True)
        return plain, lambda: None

    from tqdm import tqdm

    bars = {}

    def bar(p):
        dashboard(p, lambda text: tqdm.write(text, file=sys.stderr))
        current = bars.get(p.phase)
        if current is None:
            current = bars[p.phase] = tqdm(total=p.total, desc=p.phase, unit="file",
                                           file=sys.stderr, dynamic_ncols=True)
        current.n = p.done
        current.set_postfix(ok=p.ok, failed=p.failed, skipped=p.skipped, refresh=False)
        current.refresh()
        if p.remaining == 0:
            current.close()

    def close():
        for b in bars.values():
            b.close()

    return bar, close
