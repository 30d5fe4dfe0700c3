"""The batch gallery: thumbnails of every input and its overlay, and ``index.html``.

Pictures for people to look at; the summary files hold the figures.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import cv2
import numpy as np

from .. import postprocess
from ..io import write_png
from .inputs import BatchItem, _inside, _rel

if TYPE_CHECKING:  # summary imports this module to write the gallery
    from .summary import BatchReport


GALLERY = "index.html"


THUMBS_DIR = "thumbs"


#: Longest side of the gallery thumbnails, in pixels.
THUMB_SIZE = 192


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = THUMB_SIZE / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _thumb_paths(out_dir: Path, item: BatchItem) -> dict[str, Path]:
    folder = out_dir / THUMBS_DIR / item.rel_dir
    return {kind: folder / f"{item.stem}_{kind}.thumb.png" for kind in ("input", "overlay")}


def write_thumbnails(out_dir: Path, item: BatchItem, image, overlay_rgb) -> dict[str, str]:
    """Small PNGs of the input (display-stretched) and of the overlay, for the gallery."""
    _inside(out_dir, f"{THUMBS_DIR}/{item.rel_dir}")
    paths = _thumb_paths(out_dir, item)
    data, valid = image.data, image.valid
    if image.ndim == 3:  # middle slice, as the overlay shows
        data, valid = data[data.shape[0] // 2], valid[valid.shape[0] // 2]
    pictures = {"input": postprocess.display_rgb(data, valid), "overlay": overlay_rgb}
    paths["input"].parent.mkdir(parents=True, exist_ok=True)
    for kind, path in paths.items():
        write_png(path, _thumbnail(pictures[kind]), overwrite=True)
    return {kind: _rel(path, out_dir) for kind, path in paths.items()}


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left;
         vertical-align: middle; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.thumb { display: block; max-width: 192px; max-height: 192px; background: #eee; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 2px;
          vertical-align: middle; border: 1px solid #0003; }
.failed { color: #a00; }
.shares { font-size: 85%; line-height: 1.6; }
"""


def _href(rel: str) -> str:
    return html.escape(quote(rel, safe="/"), quote=True)


def gallery_html(report: BatchReport, counts: dict, started: str) -> str:
    esc = html.escape
    done = [r for r in report.rows if r["status"] in ("ok", "skipped")]
    failed = [r for r in report.rows if r["status"] in ("failed", "cancelled")]
    k_max = max((r["n_components"] or 0 for r in done), default=0)
    palette = postprocess.segment_colors(k_max)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gmmseg batch: {esc(report.out_dir.name or str(report.out_dir))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>gmmseg batch</h1>",
        f"<p>{counts['total']} inputs: {counts['ok']} segmented, {counts['skipped']} complete "
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
        parts.append(
            "<h2>Segmented</h2><table><thead><tr><th>input</th><th>image</th>"
            "<th>segments</th><th>size</th><th>K</th><th>EM iterations</th><th>converged</th>"
            "<th>mean log-likelihood</th><th>seconds</th><th>segment shares</th><th>files</th>"
            "</tr></thead><tbody>")
        for r in done:
            name = esc(r["input"])
            cells = [f"<td>{name}" + (" <small>(earlier run)</small>"
                                      if r["status"] == "skipped" else "") + "</td>"]
            for kind in ("input", "overlay"):
                rel = r["thumbnails"].get(kind)
                cells.append(
                    f'<td><img class="thumb" src="{_href(rel)}" alt="{kind} of {name}"></td>'
                    if rel else "<td>–</td>")
            size = "×".join(str(v) for v in (r["width"], r["height"], r["depth"]) if v)
            if r["channels"]:
                size += f" · {r['channels']} ch"
            ll = r["mean_log_likelihood"]
            shares = "".join(
                f'<span class="swatch" style="background:rgb{tuple(int(c) for c in palette[k])}">'
                f"</span>{k}: {100 * s:.1f}%<br>" for k, s in enumerate(r["shares"] or []))
            warn = "".join(f'<br><small class="failed">{esc(w)}</small>' for w in r["warnings"])
            links = " ".join(f'<a href="{_href(rel)}">{esc(kind)}</a>'
                             for kind, rel in r["outputs"].items())
            cells += [
                f"<td>{esc(size)}</td>",
                f'<td class="num">{r["n_components"]}</td>',
                f'<td class="num">{r["n_iter"]}</td>',
                f"<td>{'yes' if r['converged'] else 'no'}{warn}</td>",
                f'<td class="num">{"" if ll is None else f"{ll:.3f}"}</td>',
                f'<td class="num">{r["seconds"]:.2f}</td>' if r["seconds"] is not None
                else "<td></td>",
                f'<td class="shares">{shares}</td>',
                f"<td>{links}</td>",
            ]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    if failed:
        parts.append(f'<h2 class="failed">Not segmented ({len(failed)})</h2>'
                     "<table><thead><tr><th>input</th><th>status</th><th>reason</th></tr>"
                     "</thead><tbody>")
        for r in failed:
            parts.append(f"<tr><td>{esc(r['input'])}</td><td>{esc(r['status'])}</td>"
                         f'<td class="failed">{esc(r["error"])}</td></tr>')
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
