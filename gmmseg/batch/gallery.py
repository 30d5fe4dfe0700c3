"""The batch gallery: thumbnails of every input and its overlays, and ``index.html``.

Pictures for people to look at; the summary files hold the figures.  The
page fits a 1280-pixel browser window: the input, its segments and, for
photos, its connected regions side by side, then the figures and links.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import cv2
import numpy as np

from .. import postprocess
from ..errors import GmmsegError, counted
from ..io import write_png
from ..pipeline.figures import overlay_picture
from .inputs import BatchItem, _inside, _rel

if TYPE_CHECKING:  # summary imports this module to write the gallery
    from .summary import BatchReport


GALLERY = "index.html"


THUMBS_DIR = "thumbs"


#: Longest side of the gallery thumbnails, in pixels.
THUMB_SIZE = 192


#: The pictures of an input that get a thumbnail: the input itself and these outputs.
THUMB_KINDS = ("input", "overlay", "regions_overlay")


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = THUMB_SIZE / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _thumb_paths(out_dir: Path, item: BatchItem, kinds=THUMB_KINDS) -> dict[str, Path]:
    folder = out_dir / THUMBS_DIR / item.rel_dir
    return {kind: folder / f"{item.stem}_{kind}.thumb.png" for kind in kinds}


def thumb_kinds(outputs, *, whole=True) -> tuple[str, ...]:
    """The thumbnails an input with these outputs (kind -> path) gets.

    ``whole=False``: an input segmented window by window, never read whole,
    gets no thumbnail of itself.
    """
    return tuple(k for k in THUMB_KINDS if (k == "input" and whole) or k in outputs)


def write_thumbnails(out_dir: Path, item: BatchItem, image, outputs) -> dict[str, str]:
    """Small PNGs of the input and of its overlays as written, for the gallery.

    Parameters
    ----------
    out_dir : Path
    item : BatchItem
    image : Image or None
        The input: display-stretched (a volume: the slices of its overlay's
        montage); None for an input segmented window by window (no
        thumbnail of it).
    outputs : dict of str to Path
        The input's output files by kind; ``"overlay"`` and, if written,
        ``"regions_overlay"`` are read back and shrunk.

    Returns
    -------
    dict of str to str
        Thumbnail kind -> path relative to ``out_dir``.
    """
    _inside(out_dir, f"{THUMBS_DIR}/{item.rel_dir}")
    paths = _thumb_paths(out_dir, item, thumb_kinds(outputs, whole=image is not None))
    pictures = {}
    if image is not None and image.ndim == 3:  # the montage of the overlay, without the labels
        pictures["input"] = overlay_picture(
            image, np.where(image.valid, np.int8(0), np.int8(-1)), alpha=0.0, boundaries=False)
    elif image is not None:
        pictures["input"] = postprocess.display_rgb(image.data, image.valid)
    for kind in paths.keys() - {"input"}:
        bgr = cv2.imread(str(outputs[kind]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise GmmsegError(f"{outputs[kind]}: cannot read the {kind} back")
        pictures[kind] = bgr[..., ::-1]
    (out_dir / THUMBS_DIR / item.rel_dir).mkdir(parents=True, exist_ok=True)
    for kind, path in paths.items():
        write_png(path, _thumbnail(pictures[kind]), overwrite=True)
    return {kind: _rel(path, out_dir) for kind, path in paths.items()}


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; max-width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left;
         vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; z-index: 1; }
td.name { max-width: 11em; overflow-wrap: anywhere; }
td.pic { padding: 4px 4px; }
img.thumb { display: block; max-width: 176px; max-height: 176px; background: #eee; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 3px;
          vertical-align: middle; border: 1px solid #0003; }
.failed { color: #a00; }
.small { font-size: 85%; line-height: 1.5; }
td.files { max-width: 13em; overflow-wrap: anywhere; }
td.files a { display: inline-block; margin-right: 0.6em; }
.reason { overflow-wrap: anywhere; }
"""


def _href(rel: str) -> str:
    return html.escape(quote(rel, safe="/"), quote=True)


def _shares_cell(row, palette) -> str:
    """Per segment: colour, share and (where the spacing says) area or volume."""
    sizes = row.get("segment_sizes") or []
    units = row.get("size_units") or ""
    lines = []
    for k, share in enumerate(row["shares"] or []):
        known = k < len(sizes) and sizes[k] is not None
        size = f" · {postprocess.format_quantity(sizes[k])} {units}" if known else ""
        lines.append(f'<span class="swatch" style="background:rgb'
                     f'{tuple(int(c) for c in palette[k])}"></span>{k}: {100 * share:.1f}%'
                     f"{html.escape(size)}")
    return "<br>".join(lines)


def _fit_cell(row) -> str:
    ll, seconds = row["mean_log_likelihood"], row["seconds"]
    warn = "".join(f'<br><span class="failed">{html.escape(w)}</span>' for w in row["warnings"])
    converged = "converged" if row["converged"] else "not converged"
    lines = [f"K = {row['n_components']}", f"{row['n_iter']} EM iterations, {converged}"]
    if ll is not None:
        lines.append(f"mean log-lik. {ll:.3f}")
    if row.get("n_regions") is not None:
        lines.append(f"{row['n_regions']} regions")
    if row.get("windows") is not None:
        lines.append(f"windowed: {counted(row['windows'], 'window')}")
    if seconds is not None:
        lines.append(f"{seconds:.2f} s")
    return "<br>".join(lines) + warn


def gallery_html(report: BatchReport, counts: dict, started: str) -> str:
    esc = html.escape
    done = [r for r in report.rows if r["status"] in ("ok", "skipped")]
    failed = [r for r in report.rows if r["status"] in ("failed", "cancelled")]
    k_max = max((r["n_components"] or 0 for r in done), default=0)
    palette = postprocess.segment_colors(k_max)
    with_regions = any("regions_overlay" in r["thumbnails"] for r in done)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gmmseg batch: {esc(report.out_dir.name or str(report.out_dir))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>gmmseg batch</h1>",
        f"<p>{counted(counts['total'], 'input')}: {counts['ok']} segmented, {counts['skipped']} complete "
        f"from an earlier run, {counts['failed']} failed"
        + (f", {counts['cancelled']} not processed (interrupted)" if counts["cancelled"] else "")
        + f". Started {esc(started)}, {report.seconds:.1f} s. "
        f'<a href="{_href(report.summary_csv.name)}">CSV</a> · '
        f'<a href="{_href(report.summary_json.name)}">JSON</a>'
        + (f' · <a href="{_href(_rel(report.shared_model, report.out_dir))}">shared model</a>'
           if report.shared_model else "")
        + "</p>",
    ]
    if done:
        pictures = [("input", "image"), ("overlay", "segments")]
        if with_regions:
            pictures.append(("regions_overlay", "connected regions"))
        parts.append(
            "<h2>Segmented</h2><table><thead><tr><th>input</th>"
            + "".join(f"<th>{title}</th>" for _, title in pictures)
            + "<th>segment shares</th><th>fit</th><th>files</th></tr></thead><tbody>")
        for r in done:
            name = esc(r["input"])
            size = "×".join(str(v) for v in (r["width"], r["height"], r["depth"]) if v)
            if r["channels"]:
                size += f" · {r['channels']} ch"
            cells = [f'<td class="name">{name}<br><span class="small">{esc(size)}</span>'
                     + ("<br><small>(earlier run)</small>" if r["status"] == "skipped" else "")
                     + "</td>"]
            for kind, title in pictures:
                rel = r["thumbnails"].get(kind)
                cells.append(
                    f'<td class="pic"><img class="thumb" src="{_href(rel)}" '
                    f'alt="{title} of {name}"></td>' if rel else "<td>–</td>")
            links = " ".join(f'<a href="{_href(rel)}">{esc(kind)}</a>'
                             for kind, rel in r["outputs"].items())
            cells += [
                f'<td class="small">{_shares_cell(r, palette)}</td>',
                f'<td class="small">{_fit_cell(r)}</td>',
                f'<td class="files small">{links}</td>',
            ]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    if failed:
        parts.append(f'<h2 class="failed">Not segmented ({len(failed)})</h2>'
                     "<table><thead><tr><th>input</th><th>status</th><th>reason</th></tr>"
                     "</thead><tbody>")
        for r in failed:
            parts.append(f'<tr><td class="name">{esc(r["input"])}</td><td>{esc(r["status"])}</td>'
                         f'<td class="failed reason">{esc(r["error"])}</td></tr>')
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
