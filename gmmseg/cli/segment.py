"""``gmmseg segment``: segment images one by one and write their outputs.

Owns the per-file loop (one bad input must not stop the others), the
refusal to write over an input, and the one line printed per image.  Inputs
whose outputs would share names get distinct ones as in a batch
(:func:`gmmseg.batch.distinct_stems`: ``coffee_png``, ``coffee_jpg``).  It
must not segment or write files itself: that is
:func:`gmmseg.pipeline.segment` and :meth:`gmmseg.Segmentation.save`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import click

from ..errors import counted
from ._errors import echo_warnings, held_warnings, report_failure
from ._help import GroupedCommand
from .options import (
    large_scene_options,
    mask_option,
    model_options,
    output_options,
    preset_option,
    reader_options,
    verbosity_options,
)
from .presets import given_only

EXAMPLES = """
gmmseg segment photo.jpg -k 4 -o out
gmmseg segment photo.jpg -k auto -o out               # K chosen by BIC
gmmseg segment scan.nii.gz -k 3 --smooth 1 -o out     # a volume, with the Potts prior
gmmseg segment scene.tif --bands 4,3,2 -k 5 --save-proba -o out
gmmseg segment cells.tif --preset fluorescence -o out   # contrast features + prior, K = 2
gmmseg segment brain.nii.gz --preset t1 -o out          # CSF/GM/WM, bias field, pve maps
"""


@click.command(cls=GroupedCommand, epilog=EXAMPLES)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@reader_options
@mask_option
@preset_option
@model_options
@output_options
@large_scene_options
@verbosity_options
def segment(images, read_kwargs, mask, preset, out_dir, n_components, features, covariance_type,
            pca, seed, max_fit_samples, min_region_size, smoothing, connectivity, criterion,
            init_params, n_init, max_iter, tol, threads, save_proba, save_loglik,
            save_uncertainty, save_anomaly, anomaly_quantile, anomaly_threshold, regions,
            region_scale, alpha, overwrite, max_memory, jobs, scheduler):
    """Segment IMAGES into K segments.

    For each input STEM.ext, writes STEM_labels.png (label map, 0..K-1 in
    canonical order), STEM_overlay.png and STEM_report.json into OUT_DIR;
    for colour photos also STEM_regions.png and STEM_regions_overlay.png
    (connected regions, see --regions).  Existing outputs are kept unless
    --overwrite is given.  With -k auto, K is chosen for each image and the
    criterion curve goes into the report.
    """
    from ..batch import items_from_files
    from ..io import read_image, real_path
    from ..pipeline import segment as run_segment

    quiet = click.get_current_context().meta["gmmseg.quiet"]
    failed = 0
    inputs = {real_path(p) for p in images}
    items = items_from_files(images)
    for path, stem in ((item.path, item.stem) for item in items):
        try:
            t0 = time.perf_counter()
            with held_warnings(path) as caught:
                large = dict(max_memory=max_memory, jobs=jobs, scheduler=scheduler)
                options = given_only(dict(
                    n_components=n_components, features=features,
                    covariance_type=covariance_type, random_state=seed,
                    max_fit_samples=max_fit_samples, pca=pca, min_region_size=min_region_size,
                    smoothing=smoothing, connectivity=connectivity, init_params=init_params,
                    n_init=n_init, max_iter=max_iter, tol=tol, n_jobs=threads,
                    criterion=criterion, mask=mask), preset)
                wanted = dict(save_proba=save_proba, save_loglik=save_loglik, regions=regions,
                              uncertainty=save_uncertainty or save_anomaly
                              or anomaly_quantile is not None or anomaly_threshold is not None)
                if windowed_segment(path, stem, out_dir, read_kwargs, preset, options, wanted,
                                    large, alpha=alpha, overwrite=overwrite, quiet=quiet,
                                    inputs=inputs):
                    echo_warnings(caught, path)
                    continue
                image = read_image(path, **read_kwargs)
                seg = run_segment(image, preset=preset, **options)
                maps = dict(proba=save_proba, log_likelihood=save_loglik,
                            uncertainty=save_uncertainty, anomaly=save_anomaly, regions=regions,
                            region_scale=region_scale)
                targets = seg.output_paths(out_dir, stem, **maps, anomaly_mask=(
                    anomaly_quantile is not None or anomaly_threshold is not None))
                clash = [t for t in targets.values() if real_path(t) in inputs]
                if clash:
                    raise click.ClickException(f"{clash[0]}: output would replace an input file")
                seg.save(out_dir, stem, overwrite=overwrite, alpha=alpha, **maps,
                         anomaly_quantile=anomaly_quantile, anomaly_threshold=anomaly_threshold)
            echo_warnings(caught, path)
            if not quiet:
                m = seg.model
                click.echo(
                    f"{path}: {counted(m.n_components, 'segment')}{_selection_note(seg)}, "
                    f"{counted(m.n_iter_, 'EM iteration')}"
                    f"{'' if m.converged_ else ' (not converged)'}"
                    f"{_smoothing_note(seg)}{_preset_note(seg)}"
                    f"{_anomaly_note(seg, anomaly_quantile, anomaly_threshold)}"
                    f"{_regions_note(seg)}, "
                    f"{time.perf_counter() - t0:.2f} s -> {targets['labels']}")
        except click.ClickException as err:
            click.echo(f"error: {err.format_message()}", err=True)
            failed += 1
        except Exception as err:  # one bad input must not stop the others
            report_failure(path, err)
            failed += 1
    if failed:
        if len(items) > 1:
            click.echo(f"{failed} of {len(items)} inputs failed", err=True)
        sys.exit(1)


def windowed_segment(path, stem, out_dir, read_kwargs, preset, options, maps, large, *,
                     alpha, overwrite, quiet, inputs) -> bool:
    """Segment ``path`` window by window if it is beyond --max-memory (or --scheduler is given).

    Returns whether it did; prints the one line per image itself.
    """
    from ..io import real_path
    from ..pipeline.windowed import needs_windows, output_names, segment_windowed

    read = {k: v for k, v in read_kwargs.items() if k != "series"}
    options = dict(options)
    mask = options.pop("mask", None)
    if large["scheduler"] is None and not needs_windows(
            path, max_memory=large["max_memory"], preset=preset, save_proba=maps["save_proba"],
            save_loglik=maps["save_loglik"], **read, **options):
        return False
    if mask is not None or maps["uncertainty"]:
        what = "--mask" if mask is not None else "uncertainty and anomaly maps"
        raise click.ClickException(f"{path}: {what} need the whole image, which is beyond "
                                   "--max-memory; raise --max-memory")
    for name in output_names(stem):
        if real_path(Path(out_dir) / name) in inputs:
            raise click.ClickException(f"{Path(out_dir) / name}: output would "
                                       "replace an input file")
    t0 = time.perf_counter()
    with _window_progress(quiet) as progress:
        report = segment_windowed(
            path, out_dir, stem, preset=preset, max_memory=large["max_memory"],
            workers=large["jobs"], scheduler=large["scheduler"],
            save_proba=maps["save_proba"], save_loglik=maps["save_loglik"],
            regions=maps["regions"], alpha=alpha, overwrite=overwrite,
            progress=progress, **read, **options)
    if not quiet:
        model, run = report["model"], report["windowed"]
        click.echo(f"{path}: {counted(model['n_components'], 'segment')}, "
                   f"{counted(model['n_iter'], 'EM iteration')}"
                   f"{'' if model['converged'] else ' (not converged)'}, windowed "
                   f"({counted(run['windows'], 'window')} within "
                   f"{run['max_memory'] / 2**30:.2f} GiB), {time.perf_counter() - t0:.2f} s "
                   f"-> {report['files']['labels']}")
    return True


@contextlib.contextmanager
def _window_progress(quiet):
    """A progress bar over windows on a terminal (stderr), else nothing."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(unit="window", desc="windows", leave=False, file=sys.stderr)

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()


def _regions_note(seg) -> str:
    n = (seg.info.get("regions") or {}).get("n_regions")
    return f", {counted(n, 'connected region')}" if n is not None else ""


def _selection_note(seg):
    chosen = seg.info.get("model_selection")
    if not chosen:
        return ""
    ks = chosen["k_values"]
    decided_by = chosen.get("decided_by", chosen["criterion"])
    how = "counted by ICL" if decided_by == "count" else f"chosen by {decided_by.upper()}"
    return f" ({how} among K = {ks[0]}..{ks[-1]})"


def _preset_note(seg) -> str:
    record = seg.info.get("preset")
    return f", preset {record['name']}" if record else ""


def _smoothing_note(seg) -> str:
    n = seg.info.get("smoothing_iterations", 0)
    return f" + {n} with the Potts prior" if n else ""


def _anomaly_note(seg, quantile, threshold):
    if quantile is None and threshold is None:
        return ""
    share = seg.anomaly_mask(quantile, threshold=threshold).sum() / seg.info["n_valid"]
    return f", anomalous {share:.3%}"
