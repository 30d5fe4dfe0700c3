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
- :mod:`.stats`: per-segment pixel counts and statistics;
- :mod:`._graph` (connected pieces, touching pairs, borders) and
  :mod:`._arrays` (argument checks, row blocks, runs): the private layer
  underneath.

Imports point one way: ``regions`` uses ``labels`` and ``stats``; ``labels``
and ``display`` use ``_graph``; each uses ``_arrays``, which uses none.
"""

from .display import boundaries, colormap, display_rgb, heat_map, overlay, segment_colors
from .labels import labels_from_proba, normalized_entropy, remove_small_regions, scatter_valid
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
    "REGION_BOUNDARY_WEIGHT",
    "REGION_MIN_SHARE",
    "REGION_MIN_SIZE",
    "REGION_RIDGE",
    "REGION_SCALE",
    "boundaries",
    "check_region_mode",
    "check_region_scale",
    "colormap",
    "display_rgb",
    "heat_map",
    "labels_from_proba",
    "normalized_entropy",
    "overlay",
    "pixel_counts",
    "RegionHierarchy",
    "region_hierarchy",
    "remove_small_regions",
    "scatter_valid",
    "segment_colors",
    "segment_stats",
]
