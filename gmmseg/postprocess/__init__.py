"""From responsibilities to label maps, regions, pictures and per-segment statistics.

Everything here is a function of arrays: responsibilities ``(..., K)``, label
maps ``(H, W)`` or ``(Z, H, W)`` (int, ``-1`` for invalid pixels) and image
data ``(..., C)``. Nothing here fits a model.

Float work on large images (stretching, blending, statistics, argmax) runs in
blocks of about a million pixels, so no full-size float64 temporary is made.

One concern per module; this package only gathers their public names:

- :mod:`.labels`: labels from responsibilities and small-region clean-up;
- :mod:`.regions`: the connected-region hierarchy and its constants;
- :mod:`.display`: display stretches, heat maps, colours and overlays;
- :mod:`.annotate`: colour bars, legends and text that key a picture;
- :mod:`.montage`: volumes as a grid of slices at their physical size;
- :mod:`.stats`: per-segment pixel counts and statistics;
- :mod:`._graph` (connected pieces, touching pairs, borders) and
  :mod:`._arrays` (argument checks, row blocks, runs): the private layer
  underneath.

Imports point one way: ``regions`` uses ``labels`` and ``stats``; ``labels``
and ``display`` use ``_graph``; ``montage`` uses ``annotate``, which uses
``display``; each uses ``_arrays``, which uses none.
"""

from .annotate import (
    MIN_KEY_WIDTH,
    colorbar,
    draw_text,
    format_quantity,
    legend,
    nice_ticks,
    stack,
)
from .display import (
    boundaries,
    colormap,
    display_ranges,
    display_rgb,
    heat_map,
    overlay,
    percentile_range,
    segment_colors,
)
from .labels import labels_from_proba, normalized_entropy, remove_small_regions, scatter_valid
from .montage import (
    N_SLICES,
    TILE_SIZE,
    caption_scale,
    montage_slices,
    resize_nearest,
    resize_picture,
    volume_montage,
    volume_slice,
)
from .regions import (
    REGION_BOUNDARY_WEIGHT,
    REGION_MIN_SHARE,
    REGION_MIN_SIZE,
    REGION_RIDGE,
    REGION_SCALE,
    RegionHierarchy,
    check_region_mode,
    check_region_scale,
    region_hierarchy,
)
from .stats import pixel_counts, segment_stats

__all__ = [
    "MIN_KEY_WIDTH",
    "N_SLICES",
    "TILE_SIZE",
    "REGION_BOUNDARY_WEIGHT",
    "REGION_MIN_SHARE",
    "REGION_MIN_SIZE",
    "REGION_RIDGE",
    "REGION_SCALE",
    "boundaries",
    "caption_scale",
    "check_region_mode",
    "check_region_scale",
    "colorbar",
    "colormap",
    "display_ranges",
    "display_rgb",
    "draw_text",
    "format_quantity",
    "heat_map",
    "labels_from_proba",
    "legend",
    "montage_slices",
    "nice_ticks",
    "normalized_entropy",
    "overlay",
    "percentile_range",
    "pixel_counts",
    "RegionHierarchy",
    "region_hierarchy",
    "remove_small_regions",
    "resize_nearest",
    "resize_picture",
    "scatter_valid",
    "segment_colors",
    "segment_stats",
    "stack",
    "volume_montage",
    "volume_slice",
]
