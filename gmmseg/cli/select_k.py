"""``gmmseg select-k``: fit a range of K to one image and print the criteria.

Owns the table it prints (one row per K and covariance type, the choice
marked) and the ``--plot`` checks made before any fitting.  It must not fit
or draw itself: that is :func:`gmmseg.pipeline.select_k` and
:func:`gmmseg.pipeline.plot_selection`.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from ..errors import counted
from ..mixture import CLEAR_ENTROPY
from ._errors import cli_text, report_failure
from ._help import GroupedCommand
from .options import (
    SELECT_K_DEFAULTS,
    ComponentsType,
    covariance_option,
    criterion_option,
    em_options,
    feature_fit_options,
    overwrite_option,
    preset_option,
    reader_options,
    verbosity_options,
)
from .presets import given_only

EXAMPLES = """
gmmseg select-k photo.jpg
gmmseg select-k photo.jpg --k-max 15 --criterion aic --plot bic.png
gmmseg select-k scene.tif --covariance-type full --covariance-type diag
gmmseg select-k cells.tif --preset fluorescence        # on the preset's features
"""


@click.command("select-k", cls=GroupedCommand, epilog=EXAMPLES)
@click.argument("image", type=click.Path(path_type=Path))
@reader_options
@preset_option
@click.option("--k-min", type=ComponentsType(auto=False),
              default=SELECT_K_DEFAULTS["k_min"], show_default=True, help="Smallest K tried.")
@click.option("--k-max", type=ComponentsType(auto=False),
              default=SELECT_K_DEFAULTS["k_max"], show_default=True, help="Largest K tried.")
@criterion_option
@covariance_option(several=True)
@feature_fit_options
@em_options
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw BIC, AIC and ICL against K, the choice marked, into this file "
                   "(.png, .pdf, .svg; needs matplotlib).")
@overwrite_option("an existing --plot file")
@verbosity_options
def select_k(image, read_kwargs, preset, k_min, k_max, criterion, covariance_types,
             features, pca, seed, max_fit_samples, init_params, n_init, max_iter, tol, threads,
             plot, overwrite):
    """How many segments: fit K = K_MIN..K_MAX to IMAGE, count its clusters, choose K.

    As 'segment -k auto' chooses.  Prints one row per K (and covariance
    type): the density of the features (mean log-likelihood per fit pixel,
    BIC, AIC) on the fit sample (--max-fit-samples random valid pixels), the
    count's ICL and mean entropy per pixel on 5,000 of them (their
    appearance: the features without position, colour as R, G, B, integer
    values de-quantised), EM iterations and seconds; '*' marks the choice.
    --criterion auto (default) takes the count where its clusters are clear
    (mean entropy at most 0.1 nats), else the lowest BIC.
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
    from ..pipeline import plot_selection, preset_arguments
    from ..pipeline import select_k as run_select_k

    options = dict(criterion=criterion, covariance_types=covariance_types, features=features,
                   pca=pca, random_state=seed, max_fit_samples=max_fit_samples,
                   init_params=init_params, n_init=n_init, max_iter=max_iter, tol=tol,
                   n_jobs=threads)
    if preset is not None:
        try:
            options, _ = preset_arguments(preset, given_only(options, preset),
                                          accepted=SELECT_K_DEFAULTS, method="mixture",
                                          what="select_k")
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="'--preset'") from err

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            img = read_image(image, **read_kwargs)
            result = run_select_k(img, k_min, k_max, **options)
        for w in caught:
            click.echo(f"warning: {image}: {cli_text(w.message)}", err=True)
        for line in _selection_table(result):
            click.echo(line)
        if plot is not None:
            plot_selection(result, plot, overwrite=overwrite)
            if not click.get_current_context().meta["gmmseg.quiet"]:
                click.echo(f"plot -> {plot}")
    except Exception as err:
        report_failure(image, err)
        sys.exit(1)


def _selection_table(result):
    """The lines select-k prints: an aligned table, the chosen row marked '*', the why."""
    several = len({r["covariance_type"] for r in result.rows}) > 1
    header = ["", "K"] + (["covariance"] if several else []) + [
        "mean loglik", "BIC", "AIC", "count ICL", "entropy", "iter", "seconds", ""]
    count = result.count
    counted = {} if count is None else {r["n_components"]: r for r in count.rows}
    table = [header]
    for r in result.rows:
        chosen = (r["n_components"] == result.n_components
                  and r["covariance_type"] == result.covariance_type)
        cells = ["*" if chosen else "", str(r["n_components"])]
        cells += [r["covariance_type"]] if several else []
        c = counted.get(r["n_components"]) if r["covariance_type"] == getattr(
            count, "covariance_type", None) else None
        if r["error"] is not None:
            cells += ["-", "-", "-"]
        else:
            cells += [f"{r['mean_log_likelihood']:.4f}", f"{r['bic']:.1f}", f"{r['aic']:.1f}"]
        if c is None or c["error"] is not None:
            cells += ["-", "-"]
        else:
            cells += [f"{c['icl']:.1f}", f"{c['entropy'] / count.n_samples:.3f}"]
        if r["error"] is not None:
            cells += ["-", f"{r['seconds']:.2f}", r["error"]]
        else:
            cells += [str(r["n_iter"]), f"{r['seconds']:.2f}",
                      "" if r["converged"] else "not converged"]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    left = {0, len(header) - 1} | ({2} if several else set())
    lines = [" ".join(cell.ljust(w) if i in left else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in table]
    return lines + _choice_lines(result, several)


def _choice_lines(result, several):
    """The count and the choice, in words."""
    info, count, lines = result.info, result.count, []
    k_bic = result.best_by("bic")[0]
    if count is None and "error" in info.get("count", {}):
        lines.append(f"count: none ({info['count']['error']})")
    if count is not None:
        details = info.get("count", {})
        k_icl = count.best_by("icl")[0]
        entropy = next(r["entropy"] for r in count.rows if r["n_components"] == k_icl and
                       r["error"] is None) / count.n_samples
        on = f"{count.n_samples:,.0f} pixels of {details.get('features', 'the features')}"
        on += ", de-quantised" if details.get("dequantized") else ""
        lines.append(f"count: K = {k_icl} by ICL on {on}; "
                     + ("clear (one cluster, BIC agrees)" if count.clear and k_icl == 1 else
                        f"{'clear' if count.clear else 'not clear'}: mean entropy {entropy:.3f} "
                        f"nats per pixel ({'<=' if count.clear else '>'} {CLEAR_ENTROPY:g})"))
    decided_by = info.get("decided_by", result.criterion)
    how = "(the count)" if decided_by == "count" else f"by {decided_by.upper()}"
    lines.append(f"chosen: K = {result.n_components}"
                 + (f" ({result.covariance_type})" if several else "")
                 + f" {how} on {counted(round(result.n_samples), 'fit pixel', grouped=True)} "
                   f"({info['timings']['total']:.2f} s)"
                 + (f"; BIC K = {k_bic}" if decided_by != "bic" else ""))
    ks = sorted({r["n_components"] for r in result.rows})
    if len(ks) > 1 and result.n_components == ks[-1]:
        lines.append(f"note: the largest K tried was chosen; the {decided_by.upper()} "
                     "may fall further with a larger --k-max")
    return lines
