"""The ``gmmseg`` command line: thin commands over :mod:`gmmseg.pipeline`.

Exit codes: 0 all good, 1 a runtime failure (any input that failed), 2 bad
usage.  Option defaults are read from the API's signatures.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import sys
import time
import warnings
from pathlib import Path

import click

from .. import __version__
from ..errors import one_line
from ..batch import DEFAULT_PER_IMAGE
from ..pipeline import Segmentation
from ..pipeline import segment as _segment_api
from ..pipeline import select_k as _select_k_api

# The API's defaults, read from its signatures so that the CLI cannot drift
# from them (importing the package has loaded these modules anyway).
_SEGMENT = {n: p.default for n, p in inspect.signature(_segment_api).parameters.items()}
_SELECT_K = {n: p.default for n, p in inspect.signature(_select_k_api).parameters.items()}
_SAVE = {n: p.default for n, p in inspect.signature(Segmentation.save).parameters.items()}

logger = logging.getLogger("gmmseg")


# --------------------------------------------------------------------------
# Options shared by every command that segments (defined once, reused)
# --------------------------------------------------------------------------

def _check_features(ctx, param, value):
    from ..features import parse_feature_spec

    try:
        parse_feature_spec(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    return value


def _check_pca(ctx, param, value):
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError as err:
        raise click.BadParameter(f"expected an integer or a fraction, got {value!r}") from err
    if number >= 1 and number.is_integer():
        return int(number)
    if 0 < number < 1:
        return number
    raise click.BadParameter(
        f"expected a number of components >= 1 or a variance fraction in (0, 1), got {value}")


def _check_bands(ctx, param, value):
    if value is None:
        return None
    from ..io import parse_bands

    try:
        return parse_bands(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err


def reader_options(fn):
    """How input files are read, shared by every command that reads images."""
    options = [
        click.option("--bands", callback=_check_bands, default=None,
                     help="Bands (channels) to use, 1-based as in GDAL, e.g. '4,3,2'."),
        click.option("--nodata", type=float, default=None,
                     help="Value marking invalid pixels (overrides a raster's own nodata; "
                          "other formats: pixels where every channel equals it)."),
        click.option("--volume", type=click.IntRange(0), default=None,
                     help="Which 3-D volume of a 4-D NIfTI file to read (default 0)."),
        click.option("--series", default=None,
                     help="SeriesInstanceUID to read from a DICOM folder holding several."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


class ComponentsType(click.ParamType):
    """``-k``: a number of segments >= 1, or ``auto`` (chosen by a criterion)."""

    name = "K|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif str(value).strip().lower() == "auto":
            return "auto"
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"expected an integer >= 1 or 'auto', got {value!r}", param, ctx)
        if number < 1:
            self.fail(f"{number} is not in the range x>=1 (or use 'auto')", param, ctx)
        return number


def _apply(options, fn):
    for option in reversed(options):
        fn = option(fn)
    return fn


# Options that select-k shares with the segmenting commands, each defined once.
_FEATURE_FIT_OPTIONS = [
    click.option("--features", default=_SEGMENT["features"], show_default=True,
                 callback=_check_features,
                 help="Feature spec: names from lab, rgb, hsv, gray, bands, position, "
                      "texture, contrast, with optional weights, e.g. 'lab,position:0.5'. "
                      "'auto': lab,position for colour photos, gray for grey images, bands otherwise."),
    click.option("--pca", callback=_check_pca, default=None,
                 help="Reduce standardised features to N principal components, "
                      "or to a variance fraction such as 0.95."),
    click.option("--seed", type=int, default=_SEGMENT["random_state"], show_default=True,
                 help="Random seed: the same seed gives the same labels."),
    click.option("--max-fit-samples", type=click.IntRange(1),
                 default=_SEGMENT["max_fit_samples"], show_default=True,
                 help="Fit on at most this many random valid pixels; all are labelled."),
]
_CRITERION_OPTION = click.option(
    "--criterion", type=click.Choice(["bic", "aic"]), default=_SEGMENT["criterion"],
    show_default=True,
    help="How K is chosen by select-k and -k auto: the lowest BIC or AIC on the fit sample.")
_COVARIANCE_OPTION = click.option(
    "--covariance-type", type=click.Choice(["full", "tied", "diag", "spherical"]),
    default=_SEGMENT["covariance_type"], show_default=True)
_THREADS_OPTION = click.option(
    "--threads", type=click.IntRange(1), default=None,
    help="Threads for EM (default: all cores; in a batch, cores per worker).")
_EM_OPTIONS = [
    click.option("--init", "init_params",
                 type=click.Choice(["k-means++", "kmeans", "random", "random_from_data"]),
                 default=_SEGMENT["init_params"], show_default=True,
                 help="EM initialisation."),
    click.option("--n-init", type=click.IntRange(1), default=_SEGMENT["n_init"],
                 show_default=True,
                 help="Initialisations to try; the most likely fit is kept."),
    click.option("--max-iter", type=click.IntRange(1), default=_SEGMENT["max_iter"],
                 show_default=True),
    click.option("--tol", type=click.FloatRange(0), default=_SEGMENT["tol"], show_default=True,
                 help="Stop when the mean log-likelihood improves by less than this."),
    _THREADS_OPTION,
]


# How the label field is cleaned up; also applies with a pre-fitted model.
_LABEL_FIELD_OPTIONS = [
    click.option("--min-region-size", type=click.IntRange(0),
                 default=_SEGMENT["min_region_size"], show_default=True,
                 help="Merge connected regions smaller than this many pixels into a "
                      "neighbour."),
    click.option("--smooth", "smoothing", type=click.FloatRange(0), default=_SEGMENT["smoothing"],
                 show_default=True,
                 help="Strength (beta) of a Potts prior that makes neighbouring pixels "
                      "share segments, inferred inside EM; 0 is off, about 1 removes "
                      "speckle from noisy images."),
    click.option("--connectivity", type=click.Choice(["4", "8", "6", "26"]), default=None,
                 help="Neighbourhood of --smooth: 4 or 8 (default) in 2-D, 6 or 26 "
                      "(default) in 3-D."),
]


def model_options(fn):
    """Feature and mixture options, shared by all segmenting commands."""
    options = [
        click.option("-k", "--n-components", type=ComponentsType(),
                     default=_SEGMENT["n_components"],
                     show_default=True,
                     help="Number of segments, or 'auto': the K in 1..10 with the lowest "
                          "--criterion (see select-k)."),
        _COVARIANCE_OPTION,
        *_FEATURE_FIT_OPTIONS,
        *_LABEL_FIELD_OPTIONS,
        _CRITERION_OPTION,
        *_EM_OPTIONS,
    ]
    return _apply(options, fn)


def _check_anomaly(ctx, param, value):
    other = "anomaly_threshold" if param.name == "anomaly_quantile" else "anomaly_quantile"
    if value is not None and ctx.params.get(other) is not None:
        raise click.UsageError("--anomaly-quantile and --anomaly-threshold exclude each other",
                               ctx)
    return value


def _check_not_nan(ctx, param, value):
    if value is not None and math.isnan(value):
        raise click.BadParameter("must be a number, not nan", ctx, param)
    return value


class _RegionsType(click.ParamType):
    """``--regions``: 'auto', 'scale', 'off' or a number of regions >= 1."""

    name = "auto|scale|off|N"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("auto", "scale"):
            return text
        if text in ("off", "none"):
            return None
        if text.isascii() and text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r} is not 'auto', 'scale', 'off' or a number >= 1", param, ctx)


_REGIONS = _RegionsType()

_MAP_OPTIONS = [
    click.option("--save-proba", is_flag=True,
                 help="Also write STEM_proba.tif: per-pixel probabilities (float32, K "
                      "channels)."),
    click.option("--save-loglik", is_flag=True,
                 help="Also write STEM_loglik.tif: per-pixel log-likelihood (float32; "
                      "low = unusual)."),
]
_ANALYSIS_OPTIONS = [
    click.option("--save-uncertainty", is_flag=True,
                 help="Also write STEM_uncertainty.png (heat map) and STEM_uncertainty.tif "
                      "(float32): normalised posterior entropy, 0 certain .. 1 undecided."),
    click.option("--save-anomaly", is_flag=True,
                 help="Also write STEM_anomaly.png (heat map of -log-likelihood, bright = "
                      "unusual) and STEM_loglik.tif."),
    click.option("--anomaly-quantile", default=None, callback=_check_anomaly,
                 type=click.FloatRange(0, 1, min_open=True, max_open=True),
                 help="Write STEM_anomaly_mask.png (255 = anomalous): pixels whose "
                      "log-likelihood is below this quantile of all valid pixels, "
                      "e.g. 0.001; the report gives the anomalous share."),
    click.option("--anomaly-threshold", type=float, default=None, callback=_check_anomaly,
                 help="Like --anomaly-quantile, with an absolute log-likelihood threshold."),
    click.option("--regions", type=_REGIONS, default=_SAVE["regions"], show_default=True,
                 help="Connected regions: STEM_regions.png (.tif / .nii.gz for rasters and "
                      "volumes) and STEM_regions_overlay.png, the segments split into "
                      "connected pieces and merged most alike first.  'auto': colour "
                      "photos only, merged up to --region-scale; 'scale': every image so; "
                      "a number N: N regions; 'off': none."),
    click.option("--region-scale", type=click.FloatRange(0, 1), default=_SAVE["region_scale"],
                 callback=_check_not_nan,
                 show_default=True,
                 help="Where region merging stops, as a share of the costliest merge, "
                      "0..1 (larger: fewer, bigger regions; 1 merges all)."),
]
_WRITE_OPTIONS = [
    click.option("--alpha", type=click.FloatRange(0, 1), default=_SAVE["alpha"],
                 show_default=True,
                 help="Opacity of the segment colours in the overlay."),
    click.option("--overwrite", is_flag=True, help="Replace existing output files."),
]


def output_options(fn):
    """Where and what ``segment`` writes."""
    return _apply([
        click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path),
                     default=Path("."), show_default=True, help="Folder for the outputs."),
        *_MAP_OPTIONS, *_ANALYSIS_OPTIONS, *_WRITE_OPTIONS,
    ], fn)


def batch_options(fn):
    """Output folder, maps and how the work is spread, for ``batch`` and ``apply``."""
    return _apply([
        click.option("-o", "--out-dir", required=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Folder for the outputs; the input tree is mirrored inside it."),
        *_MAP_OPTIONS, *_ANALYSIS_OPTIONS, *_WRITE_OPTIONS,
        click.option("-j", "--jobs", type=click.IntRange(1), default=None,
                     help="Worker processes (default: all cores)."),
        click.option("--scheduler", default=None,
                     help="Run on a Dask cluster: 'local' starts one here, an address such "
                          "as tcp://host:8786 uses an existing one (needs gmmseg[dask])."),
        click.option("--resume", is_flag=True,
                     help="Skip inputs whose outputs are complete (after an interrupted run)."),
    ], fn)


def verbosity_options(fn):
    @click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
    @click.option("-q", "--quiet", is_flag=True, help="Only errors.")
    @functools.wraps(fn)
    def wrapper(*args, verbose, quiet, **kwargs):
        level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[
            min(verbose, 2)]
        logging.basicConfig(level=level, format="%(levelname)s: %(message)s", force=True)
        ctx = click.get_current_context()
        ctx.meta["gmmseg.verbose"] = verbose
        ctx.meta["gmmseg.quiet"] = quiet
        return fn(*args, **kwargs)
    return wrapper


def _report_failure(path, err):
    """One line on stderr; the traceback only with -v."""
    from ..errors import GmmsegError

    expected = isinstance(err, (GmmsegError, ValueError, OSError, MemoryError))
    message = one_line(err)
    if not expected:
        message = f"internal error ({type(err).__name__}: {message})"
    if str(path) not in message:
        message = f"{path}: {message}"
    click.echo(f"error: {message}", err=True)
    if click.get_current_context().meta.get("gmmseg.verbose"):
        logger.error("traceback", exc_info=err)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gmmseg")
def main():
    """Gaussian-mixture image segmentation."""


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@reader_options
@model_options
@output_options
@verbosity_options
def segment(images, bands, nodata, volume, series, out_dir, n_components, features,
            covariance_type, pca, seed, max_fit_samples, min_region_size, smoothing,
            connectivity, criterion, init_params, n_init, max_iter, tol, threads, save_proba,
            save_loglik, save_uncertainty, save_anomaly, anomaly_quantile, anomaly_threshold,
            regions, region_scale, alpha, overwrite):
    """Segment IMAGES into K segments.

    For each input STEM.ext, writes STEM_labels.png (label map, 0..K-1 in
    canonical order), STEM_overlay.png and STEM_report.json into OUT_DIR;
    for colour photos also STEM_regions.png and STEM_regions_overlay.png
    (connected regions, see --regions).  Existing outputs are kept unless
    --overwrite is given.  With -k auto, K is chosen for each image and the
    criterion curve goes into the report.
    """
    from ..io import file_stem, read_image
    from ..pipeline import segment as run_segment

    quiet = click.get_current_context().meta["gmmseg.quiet"]
    failed = 0
    seen_stems = {}
    inputs = {p.resolve() for p in images}
    for path in images:
        try:
            stem = file_stem(path)
            if stem in seen_stems:
                raise click.ClickException(
                    f"{path}: same output name as {seen_stems[stem]}; segment them into "
                    "different --out-dir folders")
            seen_stems[stem] = path
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image = read_image(path, bands=bands, nodata=nodata, volume=volume,
                                   series=series)
                seg = run_segment(
                    image, n_components, features=features, covariance_type=covariance_type,
                    random_state=seed, max_fit_samples=max_fit_samples, pca=pca,
                    min_region_size=min_region_size, smoothing=smoothing,
                    connectivity=_connectivity(connectivity),
                    init_params=init_params, n_init=n_init, max_iter=max_iter, tol=tol,
                    n_jobs=threads, criterion=criterion)
                maps = dict(proba=save_proba, log_likelihood=save_loglik,
                            uncertainty=save_uncertainty, anomaly=save_anomaly, regions=regions,
                            region_scale=region_scale)
                targets = seg.output_paths(out_dir, stem, **maps, anomaly_mask=(
                    anomaly_quantile is not None or anomaly_threshold is not None))
                clash = [t for t in targets.values() if t.resolve() in inputs]
                if clash:
                    raise click.ClickException(f"{clash[0]}: output would replace an input file")
                seg.save(out_dir, stem, overwrite=overwrite, alpha=alpha, **maps,
                         anomaly_quantile=anomaly_quantile, anomaly_threshold=anomaly_threshold)
            for w in caught:
                click.echo(f"warning: {path}: {one_line(w.message)}", err=True)
            if not quiet:
                m = seg.model
                click.echo(
                    f"{path}: {m.n_components} segments{_selection_note(seg)}, "
                    f"{m.n_iter_} EM iterations"
                    f"{'' if m.converged_ else ' (not converged)'}"
                    f"{_smoothing_note(seg)}"
                    f"{_anomaly_note(seg, anomaly_quantile, anomaly_threshold)}"
                    f"{_regions_note(seg)}, "
                    f"{time.perf_counter() - t0:.2f} s -> {targets['labels']}")
        except click.ClickException as err:
            click.echo(f"error: {err.format_message()}", err=True)
            failed += 1
        except Exception as err:  # one bad input must not stop the others
            _report_failure(path, err)
            failed += 1
    if failed:
        if len(images) > 1:
            click.echo(f"{failed} of {len(images)} inputs failed", err=True)
        sys.exit(1)


def _regions_note(seg) -> str:
    n = (seg.info.get("regions") or {}).get("n_regions")
    return f", {n} connected regions" if n is not None else ""


def _selection_note(seg):
    chosen = seg.info.get("model_selection")
    if not chosen:
        return ""
    ks = chosen["k_values"]
    return f" (chosen by {chosen['criterion'].upper()} among K = {ks[0]}..{ks[-1]})"


def _smoothing_note(seg) -> str:
    n = seg.info.get("smoothing_iterations", 0)
    return f" + {n} with the Potts prior" if n else ""


def _anomaly_note(seg, quantile, threshold):
    if quantile is None and threshold is None:
        return ""
    share = seg.anomaly_mask(quantile, threshold=threshold).sum() / seg.info["n_valid"]
    return f", anomalous {share:.3%}"


@main.command("select-k")
@click.argument("image", type=click.Path(path_type=Path))
@reader_options
@click.option("--k-min", type=click.IntRange(1), default=_SELECT_K["k_min"], show_default=True,
              help="Smallest K tried.")
@click.option("--k-max", type=click.IntRange(1), default=_SELECT_K["k_max"], show_default=True,
              help="Largest K tried.")
@_CRITERION_OPTION
@click.option("--covariance-type", "covariance_types", multiple=True,
              default=_SELECT_K["covariance_types"],
              show_default=True, type=click.Choice(["full", "tied", "diag", "spherical"]),
              help="Covariance type to fit; repeat the option to compare several.")
@functools.partial(_apply, _FEATURE_FIT_OPTIONS)
@functools.partial(_apply, _EM_OPTIONS)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw BIC and AIC against K, the choice marked, into this file "
                   "(.png, .pdf, .svg; needs matplotlib).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --plot file.")
@verbosity_options
def select_k(image, bands, nodata, volume, series, k_min, k_max, criterion, covariance_types,
             features, pca, seed, max_fit_samples, init_params, n_init, max_iter, tol, threads,
             plot, overwrite):
    """How many segments: fit K = K_MIN..K_MAX to IMAGE, pick the lowest BIC (or AIC).

    Prints one row per K (and covariance type): mean log-likelihood per fit
    pixel, BIC, AIC, EM iterations and seconds; '*' marks the choice.  The
    criteria are computed on the fit sample (--max-fit-samples random valid
    pixels): the pixels that 'segment -k auto' fits on with the same options.
    """
    import importlib.util

    if k_max < k_min:
        raise click.BadParameter(f"{k_max} is smaller than --k-min {k_min}",
                                 param_hint="'--k-max'")
    if plot is not None:
        if importlib.util.find_spec("matplotlib") is None:
            click.echo("error: --plot needs matplotlib; install it with: "
                       "pip install 'gmmseg[plot]'", err=True)
            sys.exit(1)
        if plot.exists() and not overwrite:
            click.echo(f"error: {plot}: output exists (use --overwrite)", err=True)
            sys.exit(1)

    from ..io import read_image
    from ..pipeline import plot_selection
    from ..pipeline import select_k as run_select_k

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            img = read_image(image, bands=bands, nodata=nodata, volume=volume, series=series)
            result = run_select_k(
                img, k_min, k_max, criterion=criterion, covariance_types=covariance_types,
                features=features, pca=pca, random_state=seed, max_fit_samples=max_fit_samples,
                init_params=init_params, n_init=n_init, max_iter=max_iter, tol=tol,
                n_jobs=threads)
        for w in caught:
            click.echo(f"warning: {image}: {one_line(w.message)}", err=True)
        for line in _selection_table(result):
            click.echo(line)
        if plot is not None:
            plot_selection(result, plot, overwrite=overwrite)
            if not click.get_current_context().meta["gmmseg.quiet"]:
                click.echo(f"plot -> {plot}")
    except Exception as err:
        _report_failure(image, err)
        sys.exit(1)


def _selection_table(result):
    """The lines select-k prints: an aligned table, the chosen row marked '*'."""
    several = len({r["covariance_type"] for r in result.rows}) > 1
    header = ["", "K"] + (["covariance"] if several else []) + [
        "mean loglik", "BIC", "AIC", "iter", "seconds", ""]
    table = [header]
    for r in result.rows:
        chosen = (r["n_components"] == result.n_components
                  and r["covariance_type"] == result.covariance_type)
        cells = ["*" if chosen else "", str(r["n_components"])]
        cells += [r["covariance_type"]] if several else []
        if r["error"] is not None:
            cells += ["-", "-", "-", "-", f"{r['seconds']:.2f}", r["error"]]
        else:
            cells += [f"{r['mean_log_likelihood']:.4f}", f"{r['bic']:.1f}", f"{r['aic']:.1f}",
                      str(r["n_iter"]), f"{r['seconds']:.2f}",
                      "" if r["converged"] else "not converged"]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    left = {0, len(header) - 1} | ({2} if several else set())
    lines = [" ".join(cell.ljust(w) if i in left else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in table]
    lines.append(
        f"chosen: K = {result.n_components}"
        + (f" ({result.covariance_type})" if several else "")
        + f" by {result.criterion.upper()} on {result.n_samples:,.0f} fit pixels "
          f"({result.info['timings']['total']:.2f} s)")
    ks = sorted({r["n_components"] for r in result.rows})
    if len(ks) > 1 and result.n_components == ks[-1]:
        lines.append(f"note: the largest K tried was chosen; the {result.criterion.upper()} "
                     "may fall further with a larger --k-max")
    return lines


def _progress_printer():
    """A progress callback for batch.run_batch: a tqdm bar on a terminal, else log lines."""
    from ..batch import format_progress

    ctx = click.get_current_context()
    if ctx.meta["gmmseg.quiet"]:
        return None, lambda: None
    if not sys.stderr.isatty():
        def plain(p):
            if p.row is not None:
                click.echo(format_progress(p), err=True)
        return plain, lambda: None

    from tqdm import tqdm

    bars = {}

    def bar(p):
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


def _run_batch_command(items, out_dir, **kwargs):
    """Run a batch, print failures and a summary, exit 0/1 (130 when interrupted)."""
    from ..batch import BatchInterrupted, run_batch
    from ..errors import GmmsegError

    progress, close = _progress_printer()
    try:
        report = run_batch(items, out_dir, progress=progress, **kwargs)
    except GmmsegError as err:  # the batch as a whole cannot start (shared model, ...)
        raise click.ClickException(one_line(err)) from err
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
            click.echo(f"error: {row['input']}: {row['error']}", err=True)
    quiet = click.get_current_context().meta["gmmseg.quiet"]
    if report.exit_code != 0 or not quiet:
        click.echo(f"{len(report.rows)} inputs: {report.n_ok} segmented, {report.n_skipped} "
                   f"already complete, {report.n_failed} failed; summary: "
                   f"{report.summary_csv}, gallery: {report.gallery}",
                   err=report.exit_code != 0)
    sys.exit(report.exit_code)


def _save_kwargs(proba, log_likelihood, uncertainty, anomaly, anomaly_quantile,
                 anomaly_threshold, regions, region_scale, alpha):
    return dict(proba=proba, log_likelihood=log_likelihood, uncertainty=uncertainty,
                anomaly=anomaly, anomaly_quantile=anomaly_quantile,
                anomaly_threshold=anomaly_threshold, regions=regions,
                region_scale=region_scale, alpha=alpha)


def _segment_kwargs(**options):
    return dict(options, connectivity=_connectivity(options.get("connectivity")))


def _connectivity(value):
    return None if value is None else int(value)


@main.command()
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-r", "--recursive", is_flag=True, help="Also segment images in subfolders.")
@click.option("--include", multiple=True,
              help="Glob pattern of inputs to take (repeatable; default: every file gmmseg "
                   "reads). A pattern with '/' matches the path below INPUT_DIR.")
@click.option("--exclude", multiple=True, help="Glob pattern of inputs to skip (repeatable).")
@reader_options
@model_options
@batch_options
@click.option("--shared-model", is_flag=True,
              help="Fit one mixture on pixels pooled from all inputs and apply it to each, "
                   "so label k means the same class everywhere (saved as shared_model.npz).")
@click.option("--per-image", type=click.IntRange(1), default=DEFAULT_PER_IMAGE, show_default=True,
              help="Pixels drawn from each image for --shared-model.")
@verbosity_options
def batch(input_dir, recursive, include, exclude, bands, nodata, volume, series, out_dir,
          n_components, features, covariance_type, pca, seed, max_fit_samples, min_region_size,
          smoothing, connectivity, criterion, init_params, n_init, max_iter, tol, threads,
          save_proba, save_loglik, save_uncertainty, save_anomaly, anomaly_quantile,
          anomaly_threshold, regions, region_scale, alpha, overwrite, jobs, scheduler, resume,
          shared_model,
          per_image):
    """Segment every image in INPUT_DIR in parallel into OUT_DIR (same tree).

    Writes each input's label map, overlay and report as `segment` does, plus
    batch_summary.csv, batch_summary.json and an index.html gallery. A failing
    input is listed with its reason and the others go on; the exit code is 1
    if any input failed.
    """
    from ..batch import find_inputs
    from ..errors import GmmsegError

    if shared_model and not isinstance(n_components, int):
        raise click.UsageError("--shared-model needs a fixed -k; choose it with select-k first")
    try:
        items = find_inputs(input_dir, recursive=recursive, include=include or None,
                            exclude=exclude or None, out_dir=out_dir)
    except GmmsegError as err:
        raise click.ClickException(one_line(err)) from err
    if not items:
        raise click.UsageError(f"{input_dir}: no input images found"
                               + ("" if recursive else " (use --recursive for subfolders)"))
    _run_batch_command(
        items, out_dir, jobs=jobs, scheduler=scheduler, threads=threads, resume=resume,
        overwrite=overwrite, shared_model=shared_model, per_image=per_image,
        read_kwargs=dict(bands=bands, nodata=nodata, volume=volume, series=series),
        save_kwargs=_save_kwargs(save_proba, save_loglik, save_uncertainty, save_anomaly,
                                 anomaly_quantile, anomaly_threshold, regions, region_scale,
                                 alpha),
        segment_kwargs=_segment_kwargs(
            n_components=n_components, features=features, covariance_type=covariance_type,
            pca=pca, random_state=seed, max_fit_samples=max_fit_samples,
            min_region_size=min_region_size, smoothing=smoothing, connectivity=connectivity,
            criterion=criterion, init_params=init_params, n_init=n_init, max_iter=max_iter,
            tol=tol))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file to write (.npz or .json).")
@reader_options
@click.option("-k", "--n-components", type=click.IntRange(1), default=_SEGMENT["n_components"],
              show_default=True,
              help="Number of segments.")
@_COVARIANCE_OPTION
@functools.partial(_apply, _FEATURE_FIT_OPTIONS)
@functools.partial(_apply, _EM_OPTIONS)
@click.option("--per-image", type=click.IntRange(1), default=DEFAULT_PER_IMAGE, show_default=True,
              help="Pixels drawn from each image.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@verbosity_options
def fit(inputs, output, bands, nodata, volume, series, n_components, covariance_type, features,
        pca, seed, max_fit_samples, init_params, n_init, max_iter, tol, threads, per_image,
        overwrite):
    """Fit one mixture on pixels pooled from INPUTS and save it (for `apply`).

    The model file records its feature specification, so `apply` computes
    the same features and refuses inputs they do not fit.
    """
    from ..batch import fit_shared_model, save_shared_model
    from ..errors import GmmsegError

    if output.suffix.lower() not in (".npz", ".json"):
        raise click.BadParameter(f"{output}: a model file ends in .npz or .json",
                                 param_hint="'-o' / '--output'")
    if output.exists() and not overwrite:
        raise click.ClickException(f"{output}: output exists (use --overwrite)")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, extractor = fit_shared_model(
                inputs, n_components=n_components, features=features, per_image=per_image,
                pca=pca, covariance_type=covariance_type, random_state=seed,
                max_fit_samples=max_fit_samples, init_params=init_params, n_init=n_init,
                max_iter=max_iter, tol=tol, n_jobs=threads,
                read_kwargs=dict(bands=bands, nodata=nodata, volume=volume, series=series))
            save_shared_model(output, model, extractor, overwrite=overwrite)
    except (GmmsegError, ValueError, OSError) as err:
        raise click.ClickException(one_line(err)) from err
    for w in caught:
        click.echo(f"warning: {one_line(w.message)}", err=True)
    skipped = model.metadata_.get("shared_fit", {}).get("skipped", [])
    for path, reason in skipped:
        click.echo(f"error: {path}: {reason}", err=True)
    click.echo(f"{output}: {model.n_components} components on features "
               f"{extractor.spec_string!r} from {len(inputs) - len(skipped)} of {len(inputs)} "
               f"inputs")
    if skipped:
        sys.exit(1)


@main.command()
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@reader_options
@batch_options
@functools.partial(_apply, _LABEL_FIELD_OPTIONS)
@_THREADS_OPTION
@verbosity_options
def apply(model_file, inputs, bands, nodata, volume, series, out_dir, save_proba, save_loglik,
          save_uncertainty, save_anomaly, anomaly_quantile, anomaly_threshold, regions,
          region_scale, alpha, overwrite, jobs, scheduler, resume, min_region_size, smoothing,
          connectivity, threads):
    """Segment INPUTS with a model saved by `fit` (same labels, same classes)."""
    from ..batch import items_from_files, load_shared_model
    from ..errors import GmmsegError

    try:
        model, extractor = load_shared_model(model_file)
        items = items_from_files(inputs)
    except (GmmsegError, ValueError, OSError) as err:
        raise click.ClickException(one_line(err)) from err
    _run_batch_command(
        items, out_dir, jobs=jobs, scheduler=scheduler, threads=threads, resume=resume,
        overwrite=overwrite, model=model, feature_extractor=extractor,
        read_kwargs=dict(bands=bands, nodata=nodata, volume=volume, series=series),
        save_kwargs=_save_kwargs(save_proba, save_loglik, save_uncertainty, save_anomaly,
                                 anomaly_quantile, anomaly_threshold, regions, region_scale,
                                 alpha),
        segment_kwargs=_segment_kwargs(min_region_size=min_region_size, smoothing=smoothing,
                                       connectivity=connectivity))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@reader_options
@verbosity_options
def info(files, bands, nodata, volume, series):
    """Print what gmmseg reads from FILES: shape, type, channels, geometry, valid pixels."""
    from ..io import describe, read_image

    failed = 0
    for path in files:
        try:
            img = read_image(path, bands=bands, nodata=nodata, volume=volume, series=series)
            click.echo(f"{path}: {describe(img)}")
        except Exception as err:
            _report_failure(path, err)
            failed += 1
    if failed:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
