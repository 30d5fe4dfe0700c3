"""Keys and text on pictures: colour bars with units, label legends, captions.

Owns what makes a picture readable on its own: :func:`colorbar` (a colour
strip with tick values and a caption, for heat maps), :func:`legend` (a
swatch and a name per label, for overlays), :func:`draw_text` and
:func:`stack` (a picture above its key, on one canvas).  Text is drawn with
OpenCV's Hershey font, so only ASCII is shown; nothing here needs a plotting
library.  Sizes follow the picture's width, so a key stays legible when a
large picture is shown shrunk to a screen.
"""

import math

import cv2
import numpy as np

from ._arrays import _as_int
from .display import _as_colors, colormap

_FONT = cv2.FONT_HERSHEY_SIMPLEX

#: Narrowest key in pixels: a smaller picture is centred on a canvas this wide.
MIN_KEY_WIDTH = 360


def text_scale(width):
    """Font scale for text on a picture ``width`` pixels wide (0.45 .. 2.5)."""
    return float(np.clip(width / 1100.0, 0.45, 2.5))


def _thickness(scale):
    return max(1, round(scale * 2))


def text_size(text, scale):
    """``(width, height, baseline)`` in pixels of ``text`` drawn at ``scale``."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, _thickness(scale))
    return w, h, base


def fit_scale(text, scale, max_width):
    """``scale``, or smaller so that ``text`` is at most ``max_width`` pixels wide."""
    width = text_size(text, scale)[0]
    return scale if width <= max_width else scale * max_width / max(width, 1)


def draw_text(picture, text, org, scale, color=(0, 0, 0), *, align="left", outline=False):
    """Draw ASCII ``text`` on ``picture`` in place, anti-aliased.

    Parameters
    ----------
    picture : (H, W, 3) uint8 ndarray
        Drawn on in place.
    text : str
        Non-ASCII characters are shown as "?".
    org : (int, int)
        ``(x, y)`` of the text's baseline: its left end, centre or right end
        as ``align`` says.
    scale : float
        Font scale (about 28 px cap height at 1.0).
    color : (int, int, int)
        RGB.
    align : {"left", "center", "right"}
    outline : bool, default False
        Draw strokes two pixels wider: a halo to draw the text on again in
        another colour, legible on any background.
    """
    text = text.encode("ascii", "replace").decode("ascii")
    x, y = (round(float(v)) for v in org)
    width = text_size(text, scale)[0]
    if align == "center":
        x -= width // 2
    elif align == "right":
        x -= width
    elif align != "left":
        raise ValueError(f"align must be 'left', 'center' or 'right', got {align!r}")
    cv2.putText(picture, text, (x, y), _FONT, scale, tuple(int(c) for c in color),
                _thickness(scale) + (2 if outline else 0), cv2.LINE_AA)
    return picture


def format_quantity(value):
    """A measured size as people write it: thousands grouped, no exponents.

    Examples
    --------
    >>> [format_quantity(v) for v in (1427312.6, 76.53, 0.6821)]
    ['1,427,313', '76.5', '0.682']
    """
    value = float(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def nice_ticks(low, high, n=5):
    """Round tick values between ``low`` and ``high``: steps of 1, 2, 2.5 or 5 x 10^k.

    Returns
    -------
    ticks : list of float
        About ``n`` values in ``[low, high]``, ascending.
    decimals : int
        Decimals that show every tick exactly.

    Examples
    --------
    >>> nice_ticks(0.0, 1.0)
    ([0.0, 0.25, 0.5, 0.75, 1.0], 2)
    """
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low and high must be finite with low < high, got {low}, {high}")
    magnitude = 10.0 ** math.floor(math.log10((high - low) / max(n - 1, 1)))

    def ticks_of(step):
        first = math.ceil(low / step - 1e-9)
        last = math.floor(high / step + 1e-9)
        return [round(i * step, 12) for i in range(first, last + 1)]

    # The step whose tick count is nearest n; on a tie, the one with more ticks.
    steps = [m * magnitude * f for f in (0.1, 1.0, 10.0) for m in (1.0, 2.0, 2.5, 5.0)]
    step = min(steps, key=lambda st: (abs(len(ticks_of(st)) - n), st))
    ticks = ticks_of(step)
    decimals = 0
    while decimals < 12 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return ticks, decimals


def colorbar(width, value_range, *, cmap="magma", label="", background=(255, 255, 255),
             color=(0, 0, 0), scale=None):
    """A horizontal colour bar with tick values and a caption, to put under a heat map.

    Parameters
    ----------
    width : int
        Width of the strip in pixels (that of the picture it keys).
    value_range : (float, float)
        Values at the bar's left (first colour) and right (last colour) end,
        as the heat map was coloured (:func:`gmmseg.postprocess.heat_map`).
    cmap : {"magma", "viridis", "gray"}, default "magma"
    label : str
        Caption under the tick values: what is shown and in which units.
        Shrunk to fit the width.
    background, color : (int, int, int)
        RGB of the strip and of its text and tick marks.
    scale : float, optional
        Font scale; default :func:`text_scale` of ``width``.

    Returns
    -------
    strip : (h, width, 3) uint8 ndarray
        ``h`` grows with the font (text stays legible when shown shrunk).
    """
    width = _as_int(width, "width", minimum=16)
    low, high = (float(v) for v in value_range)
    ticks, decimals = nice_ticks(low, high)
    texts = [f"{t:.{decimals}f}" for t in ticks]
    scale = text_scale(width) if scale is None else float(scale)
    unit = scale / 0.5
    pad = round(8 * unit)
    bar_h = round(16 * unit)
    tick_len = round(5 * unit)
    tick_w, tick_h, tick_base = max((text_size(t, scale) for t in texts), key=lambda s: s[0])
    margin = max(pad, tick_w // 2 + pad // 2)
    x0, x1 = margin, max(margin + 2, width - margin)
    label_scale = fit_scale(label, scale, width - 2 * pad) if label else scale
    _, label_h, label_base = text_size(label, label_scale) if label else (0, 0, 0)
    height = pad + bar_h + tick_len + pad // 2 + tick_h + tick_base + (
        pad // 2 + label_h + label_base if label else 0) + pad
    strip = np.empty((height, width, 3), dtype=np.uint8)
    strip[:] = background
    table = colormap(cmap)
    index = np.rint(np.linspace(0.0, 255.0, x1 - x0)).astype(np.intp)
    strip[pad:pad + bar_h, x0:x1] = table[index][np.newaxis]
    ink = tuple(int(c) for c in color)
    cv2.rectangle(strip, (x0, pad), (x1 - 1, pad + bar_h - 1), ink, 1)
    y_tick = pad + bar_h
    y_text = y_tick + tick_len + pad // 2 + tick_h
    for value, text in zip(ticks, texts):
        x = x0 + (value - low) / (high - low) * (x1 - 1 - x0)
        cv2.line(strip, (round(x), y_tick), (round(x), y_tick + tick_len), ink,
                 max(1, round(unit)))
        draw_text(strip, text, (x, y_text), scale, ink, align="center")
    if label:
        draw_text(strip, label, (width / 2, y_text + tick_base + pad // 2 + label_h),
                  label_scale, ink, align="center")
    return strip


def legend(width, colors, names, *, background=(0, 0, 0), color=(230, 230, 230), scale=None):
    """A key of label colours: a swatch and a name per label, in rows that fit ``width``.

    Parameters
    ----------
    width : int
        Width of the strip in pixels.
    colors : (n, 3) array of int in 0..255
        RGB colour of each label, as drawn in the overlay.
    names : sequence of n str
        What each colour stands for, e.g. ``"segment 0 (darkest) 35.0%"``.
    background, color : (int, int, int)
        RGB of the strip and of its text.
    scale : float, optional
        Font scale; default :func:`text_scale` of ``width``.

    Returns
    -------
    strip : (h, width, 3) uint8 ndarray
    """
    width = _as_int(width, "width", minimum=16)
    colors = _as_colors(colors, "colors")
    names = [str(n) for n in names]
    if len(names) != colors.shape[0]:
        raise ValueError(f"names must name every colour ({colors.shape[0]}), got {len(names)}")
    scale = text_scale(width) if scale is None else float(scale)
    unit = scale / 0.5
    pad = round(8 * unit)
    _, line_h, base = text_size("Ag", scale)
    swatch = line_h + base
    gap = round(14 * unit)
    # Lay the entries out in rows, left to right, wrapping where the width ends.
    rows, row, x = [], [], pad
    for k, name in enumerate(names):
        w = swatch + pad // 2 + min(text_size(name, scale)[0], width - 2 * pad - swatch)
        if row and x + w > width - pad:
            rows.append(row)
            row, x = [], pad
        row.append((k, x))
        x += w + gap
    if row:
        rows.append(row)
    row_h = swatch + pad // 2
    strip = np.empty((pad + len(rows) * row_h + pad // 2, width, 3), dtype=np.uint8)
    strip[:] = background
    for r, entries in enumerate(rows):
        top = pad + r * row_h
        for k, x in entries:
            cv2.rectangle(strip, (x, top), (x + swatch - 1, top + swatch - 1),
                          tuple(int(c) for c in colors[k]), -1)
            cv2.rectangle(strip, (x, top), (x + swatch - 1, top + swatch - 1),
                          tuple(int(c) for c in color), 1)
            room = width - pad - (x + swatch + pad // 2)
            draw_text(strip, names[k], (x + swatch + pad // 2, top + line_h),
                      fit_scale(names[k], scale, room), color)
    return strip


def stack(*pictures, background=(255, 255, 255)):
    """Pictures one above the other on one canvas, each centred horizontally.

    Parameters
    ----------
    *pictures : (h_i, w_i, 3) uint8 ndarrays
    background : (int, int, int)
        RGB of the canvas beside pictures narrower than the widest.

    Returns
    -------
    canvas : (sum h_i, max w_i, 3) uint8 ndarray
    """
    width = max(p.shape[1] for p in pictures)
    canvas = np.empty((sum(p.shape[0] for p in pictures), width, 3), dtype=np.uint8)
    canvas[:] = background
    top = 0
    for p in pictures:
        left = (width - p.shape[1]) // 2
        canvas[top:top + p.shape[0], left:left + p.shape[1]] = p
        top += p.shape[0]
    return canvas
