"""The options of the ``gmmseg`` commands, each defined once and reused.

Owns every option that more than one command takes, the parameter types and
callbacks that turn the strings of a command line into API values, and the
defaults, read from the API's signatures so that the CLI cannot drift from
them.  Choices and names come from the library's constants
(``mixture.COVARIANCE_TYPES``, ``mrf.CONNECTIVITIES``, ...).

It must not run anything (no reading, fitting or writing: that is the
commands' job).  Where the library has the check of a value (feature specs,
band lists), the callback calls it and turns its ``ValueError`` into
``click.BadParameter``.  Options that only one command takes live with that
command.
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path

import click

# These imports add nothing to ``--help``'s start-up: ``import gmmseg`` loads
# all of them already.
from .._log import configure_logging
from ..features import FEATURE_BUILDERS, parse_feature_spec
from ..mixture import (
    COVARIANCE_TYPES,
    CRITERIA,
    INIT_METHODS,
    check_covariance_type,
    check_criterion,
)
from ..mrf import CONNECTIVITIES
from ..pipeline import (
    DEFAULT_K_RANGE,
    DEFAULT_PER_IMAGE,
    Segmentation,
    check_segment_count,
    segment,
    select_k,
)
from ..postprocess import check_region_mode, check_region_scale
from ..presets import PRESETS, check_preset
from ._errors import in_flags

# The API's defaults, read from its signatures so that the CLI cannot drift
# from them.
SEGMENT_DEFAULTS = {n: p.default for n, p in inspect.signature(segment).parameters.items()}
SELECT_K_DEFAULTS = {n: p.default for n, p in inspect.signature(select_k).parameters.items()}
SAVE_DEFAULTS = {n: p.default for n, p in inspect.signature(Segmentation.save).parameters.items()}


def _apply(fn, options):
    """Decorate ``fn`` with ``options``, listed in their ``--help`` order."""
    for option in reversed(options):
        fn = option(fn)
    return fn


# --------------------------------------------------------------------------
# Parameter types and callbacks: strings in, API values out
# --------------------------------------------------------------------------

def _check_features(ctx, param, value):
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


# "4", "8" (2-D), "6", "26" (3-D), in the order the library lists them.
_CONNECTIVITY_CHOICES = [str(n) for pair in CONNECTIVITIES.values() for n in pair]


def _to_connectivity(ctx, param, value):
    """``'8'`` -> ``8``: a ``click.Choice`` keeps the string, the API takes the number."""
    return None if value is None else int(value)


def _check_anomaly(ctx, param, value):
    other = "anomaly_threshold" if param.name == "anomaly_quantile" else "anomaly_quantile"
    if value is not None and ctx.params.get(other) is not None:
        raise click.UsageError("--anomaly-quantile and --anomaly-threshold exclude each other",
                               ctx)
    return value


class ComponentsType(click.ParamType):
    """``-k``: a number of segments a label map holds
    (:func:`gmmseg.pipeline.check_segment_count`), or ``auto`` (chosen by a
    criterion) where ``auto`` is allowed."""

    def __init__(self, *, auto=True):
        self.auto = auto
        self.name = "K|auto" if auto else "K"

    def convert(self, value, param, ctx):
        if self.auto and str(value).strip().lower() == "auto":
            return "auto"
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                expected = "an integer >= 1 or 'auto'" if self.auto else "an integer >= 1"
                self.fail(f"expected {expected}, got {value!r}", param, ctx)
        return _library_check(check_segment_count, number, param, ctx)


class _LibraryChoice(click.Choice):
    """A choice among the library's constants, checked by the library's own function."""

    def __init__(self, choices, check):
        super().__init__(choices)
        self.check = check

    def convert(self, value, param, ctx):
        return _library_check(self.check, value, param, ctx)


class _RegionsType(click.ParamType):
    """``--regions``: 'auto', 'scale', 'off' or a number of regions >= 1.

    A string of digits becomes a number; the rest is
    :func:`gmmseg.postprocess.check_region_mode`'s to judge.
    """

    name = "auto|scale|off|N"

    def convert(self, value, param, ctx):
        text = value.strip() if isinstance(value, str) else value
        if isinstance(text, str) and text.isascii() and text.isdigit():
            text = int(text)
        return _library_check(check_region_mode, text, param, ctx)


def _library_check(check, value, param, ctx):
    """``check(value, name)``, its ``ValueError`` turned into click's usage error."""
    name = param.opts[0] if param is not None and param.opts else None
    try:
        return check(value, name) if name else check(value)
    except ValueError as err:
        # click names the option already: "Invalid value for '-k': must be ..."
        text = str(err).removeprefix(f"{name} ") if name else str(err)
        raise click.BadParameter(in_flags(text), ctx, param) from err


def _preset_name(value, name="preset"):
    return check_preset(value, name).name


preset_option = click.option(
    "--preset", type=_LibraryChoice(list(PRESETS), _preset_name), default=None,
    help="A recipe for a kind of image (list: gmmseg presets): its features, K, prior and "
         "mask; options given explicitly override it.")

mask_option = click.option(
    "--mask", type=click.Path(exists=True, path_type=Path), default=None,
    help="Segment only the non-zero pixels of this file: NIfTI, DICOM or any raster on the "
         "image's grid (a brain mask, a region of interest).")


def _check_region_scale(ctx, param, value):
    return None if value is None else _library_check(check_region_scale, value, param, ctx)


# --------------------------------------------------------------------------
# Options taken by several commands (a factory where the commands differ)
# --------------------------------------------------------------------------

def reader_options(fn):
    """How input files are read, shared by every command that reads images.

    The command receives them as one ``read_kwargs`` dict, the keywords of
    :func:`gmmseg.read_image`.
    """
    @functools.wraps(fn)
    def wrapper(*args, bands, nodata, volume, series, **kwargs):
        read_kwargs = dict(bands=bands, nodata=nodata, volume=volume, series=series)
        return fn(*args, read_kwargs=read_kwargs, **kwargs)

    return _apply(wrapper, [
        click.option("--bands", callback=_check_bands, default=None,
                     help="Bands (channels) to use, 1-based as in GDAL, e.g. '4,3,2'."),
        click.option("--nodata", type=float, default=None,
                     help="Value marking invalid pixels (overrides a raster's own nodata; "
                          "other formats: pixels where every channel equals it)."),
        click.option("--volume", type=click.IntRange(0), default=None,
                     help="Which 3-D volume of a 4-D NIfTI file to read (default 0)."),
        click.option("--series", default=None,
                     help="SeriesInstanceUID to read from a DICOM folder holding several."),
    ])


def n_components_option(*, auto=True):
    """``-k/--n-components``; ``auto=False`` for a fixed K only (``fit``: a model has one K)."""
    if auto:
        k_min, k_max = DEFAULT_K_RANGE
        kind = ComponentsType()
        text = (f"Number of segments, or 'auto': the K in {k_min}..{k_max} with the lowest "
                "--criterion on the pixels' appearance (see select-k).")
    else:
        kind, text = ComponentsType(auto=False), "Number of segments."
    return click.option("-k", "--n-components", type=kind,
                        default=SEGMENT_DEFAULTS["n_components"], show_default=True, help=text)


def covariance_option(*, several=False):
    """``--covariance-type``; ``several=True`` (select-k) takes it repeated."""
    if several:
        return click.option(
            "--covariance-type", "covariance_types", multiple=True,
            default=SELECT_K_DEFAULTS["covariance_types"], show_default=True,
            type=_LibraryChoice(COVARIANCE_TYPES, check_covariance_type),
            help="Covariance type to fit; repeat the option to compare several.")
    return click.option(
        "--covariance-type", type=_LibraryChoice(COVARIANCE_TYPES, check_covariance_type),
        default=SEGMENT_DEFAULTS["covariance_type"], show_default=True,
        help="Form of each segment's covariance: full, shared by all (tied), diagonal, or "
             "one variance (spherical).")


criterion_option = click.option(
    "--criterion", type=_LibraryChoice(CRITERIA, check_criterion),
    default=SEGMENT_DEFAULTS["criterion"],
    show_default=True,
    help="How select-k and -k auto choose K: the lowest ICL (clusters that stand apart), "
         "BIC or AIC (density fit) on the fit sample.")

threads_option = click.option(
    "--threads", type=click.IntRange(1), default=None,
    help="Threads for EM (default: all cores; in a batch, cores per worker).")


def feature_fit_options(fn):
    """The features and the sample a mixture is fitted on."""
    return _apply(fn, [
        click.option("--features", default=SEGMENT_DEFAULTS["features"], show_default=True,
                     callback=_check_features,
                     help=f"Feature spec: names from {', '.join(FEATURE_BUILDERS)}, with "
                          "optional weights, e.g. 'lab,position:0.5'. 'auto': lab,position "
                          "for colour photos, gray for grey images, bands otherwise."),
        click.option("--pca", callback=_check_pca, default=None,
                     help="Reduce standardised features to N principal components, "
                          "or to a variance fraction such as 0.95."),
        click.option("--seed", type=int, default=SEGMENT_DEFAULTS["random_state"],
                     show_default=True,
                     help="Random seed: the same seed gives the same labels."),
        click.option("--max-fit-samples", type=click.IntRange(1),
                     default=SEGMENT_DEFAULTS["max_fit_samples"], show_default=True,
                     help="Fit on at most this many random valid pixels; all are labelled."),
    ])


def em_options(fn):
    """How EM runs."""
    return _apply(fn, [
        click.option("--init", "init_params", type=click.Choice(INIT_METHODS),
                     default=SEGMENT_DEFAULTS["init_params"], show_default=True,
                     help="EM initialisation."),
        click.option("--n-init", type=click.IntRange(1), default=SEGMENT_DEFAULTS["n_init"],
                     show_default=True,
                     help="Initialisations to try; the most likely fit is kept."),
        click.option("--max-iter", type=click.IntRange(1),
                     default=SEGMENT_DEFAULTS["max_iter"], show_default=True,
                     help="Most EM iterations per fit (a warning says when it stops there)."),
        click.option("--tol", type=click.FloatRange(0), default=SEGMENT_DEFAULTS["tol"],
                     show_default=True,
                     help="Stop when the mean log-likelihood improves by less than this."),
        threads_option,
    ])


def label_field_options(fn):
    """How the label field is cleaned up; also applies with a pre-fitted model."""
    return _apply(fn, [
        click.option("--min-region-size", type=click.IntRange(0),
                     default=SEGMENT_DEFAULTS["min_region_size"], show_default=True,
                     help="Merge connected regions smaller than this many pixels into a "
                          "neighbour."),
        click.option("--smooth", "smoothing", type=click.FloatRange(0),
                     default=SEGMENT_DEFAULTS["smoothing"], show_default=True,
                     help="Strength (beta) of a Potts prior that makes neighbouring pixels "
                          "share segments, inferred inside EM; 0 is off, about 1 removes "
                          "speckle from noisy images."),
        click.option("--connectivity", type=click.Choice(_CONNECTIVITY_CHOICES), default=None,
                     callback=_to_connectivity,
                     help="Neighbourhood of --smooth: 4 or 8 (default) in 2-D, 6 or 26 "
                          "(default) in 3-D."),
    ])


def model_options(fn):
    """Feature and mixture options, shared by all segmenting commands."""
    return _apply(fn, [
        n_components_option(),
        covariance_option(),
        feature_fit_options,
        label_field_options,
        criterion_option,
        em_options,
    ])


def overwrite_option(what="existing output files"):
    """``--overwrite``, its help naming what it replaces."""
    return click.option("--overwrite", is_flag=True, help=f"Replace {what}.")


def per_image_option(text):
    """``--per-image``: the sample of each input that a shared model is fitted on."""
    return click.option("--per-image", type=click.IntRange(1), default=DEFAULT_PER_IMAGE,
                        show_default=True, help=text)


def out_dir_option(*, tree=False):
    """``-o/--out-dir``; ``tree=True`` (batch, apply) requires it and mirrors the inputs."""
    if tree:
        return click.option("-o", "--out-dir", required=True,
                             type=click.Path(file_okay=False, path_type=Path),
                             help="Folder for the outputs; the input tree is mirrored inside it.")
    return click.option("-o", "--out-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=Path("."), show_default=True, help="Folder for the outputs.")


# What is written besides the label map, overlay and report.
_map_options = [
    click.option("--save-proba", is_flag=True,
                 help="Also write STEM_proba.tif: per-pixel probabilities (float32, K "
                      "channels)."),
    click.option("--save-loglik", is_flag=True,
                 help="Also write STEM_loglik.tif: per-pixel log-likelihood (float32; "
                      "low = unusual)."),
]
_analysis_options = [
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
    click.option("--regions", type=_RegionsType(), default=SAVE_DEFAULTS["regions"],
                 show_default=True,
                 help="Connected regions: STEM_regions.png (.tif / .nii.gz for rasters and "
                      "volumes) and STEM_regions_overlay.png, the segments split into "
                      "connected pieces and merged most alike first.  'auto': colour "
                      "photos only, merged up to --region-scale; 'scale': every image so; "
                      "a number N: N regions; 'off': none."),
    click.option("--region-scale", type=float,
                 default=SAVE_DEFAULTS["region_scale"], callback=_check_region_scale,
                 show_default=True,
                 help="Where region merging stops, as a share of the costliest merge, "
                      "0..1 (larger: fewer, bigger regions; 1 merges all)."),
]
_write_options = [
    click.option("--alpha", type=click.FloatRange(0, 1), default=SAVE_DEFAULTS["alpha"],
                 show_default=True,
                 help="Opacity of the segment colours in the overlay."),
    overwrite_option(),
]


def output_options(fn):
    """Where and what ``segment`` writes."""
    return _apply(fn, [out_dir_option(), *_map_options, *_analysis_options, *_write_options])

def batch_options(fn):
    """Output folder, maps and how the work is spread, for ``batch`` and ``apply``.

    The command receives them as one ``run`` dict, keywords of
    :func:`gmmseg.batch.run_batch` (the maps as its ``save_kwargs``).
    """
    @functools.wraps(fn)
    def wrapper(*args, out_dir, save_proba, save_loglik, save_uncertainty, save_anomaly,
                anomaly_quantile, anomaly_threshold, regions, region_scale, alpha, overwrite,
                jobs, scheduler, resume, **kwargs):
        save_kwargs = dict(proba=save_proba, log_likelihood=save_loglik,
                           uncertainty=save_uncertainty, anomaly=save_anomaly,
                           anomaly_quantile=anomaly_quantile,
                           anomaly_threshold=anomaly_threshold, regions=regions,
                           region_scale=region_scale, alpha=alpha)
        run = dict(out_dir=out_dir, jobs=jobs, scheduler=scheduler, resume=resume,
                   overwrite=overwrite, save_kwargs=save_kwargs)
        return fn(*args, run=run, **kwargs)

    return _apply(wrapper, [
        out_dir_option(tree=True), *_map_options, *_analysis_options, *_write_options,
        click.option("-j", "--jobs", type=click.IntRange(1), default=None,
                     help="Worker processes (default: all cores)."),
        click.option("--scheduler", default=None,
                     help="Run on a Dask cluster: 'local' starts one here, an address such "
                          "as tcp://host:8786 uses an existing one (needs gmmseg[dask])."),
        click.option("--resume", is_flag=True,
                     help="Skip inputs whose outputs are complete (after an interrupted run)."),
    ])


def _check_max_memory(ctx, param, value):
    if value is None:
        return None
    from ..pipeline.windowed import parse_memory

    return _library_check(parse_memory, value, param, ctx)


#: ``--max-memory`` of ``segment`` and ``batch`` (which divides it among its workers).
max_memory_option = click.option(
    "--max-memory", default=None, callback=_check_max_memory, metavar="SIZE",
    help="Memory budget, e.g. 2GB or 512MiB (default: 2 GiB or a quarter of the available "
         "memory, whichever is smaller; batch divides it among the inputs segmented at "
         "once).  An image whose working set exceeds it is segmented window by window, "
         "with the same labels.")


def large_scene_options(fn):
    """``--max-memory``, ``-j/--jobs`` and ``--scheduler`` of ``segment``'s windowed path."""
    return _apply(fn, [
        max_memory_option,
        click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
                     help="Windows processed at once (windowed path; threads, or the local "
                          "Dask cluster's workers)."),
        click.option("--scheduler", default=None,
                     help="Run the windowed path on Dask: 'local' starts a cluster here, an "
                          "address such as tcp://host:8786 uses an existing one (the input "
                          "and output folder at the same paths on the workers; needs "
                          "gmmseg[dask])."),
    ])


def verbosity_options(fn):
    """``-v/-q``: the logging level, and ``ctx.meta`` for the commands' own output."""
    @click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
    @click.option("-q", "--quiet", is_flag=True, help="Only errors.")
    @functools.wraps(fn)
    def wrapper(*args, verbose, quiet, **kwargs):
        level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[
            min(verbose, 2)]
        configure_logging(level)
        ctx = click.get_current_context()
        ctx.meta["gmmseg.verbose"] = verbose
        ctx.meta["gmmseg.quiet"] = quiet
        return fn(*args, **kwargs)
    return wrapper
