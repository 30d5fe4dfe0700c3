"""From an image to a segmentation and its files.

``segment`` (image in, :class:`Segmentation` out), ``select_k`` (how many
segments), ``fit_shared_model`` (one model for many images) and the output
files of a segmentation (:mod:`gmmseg.pipeline.outputs`).  Glues io,
features, mixture, mrf and postprocess together; parses no command-line
option.

Modules: ``segment`` (image to labels, the defaults, the K choice),
``appearance`` (what segments are counted on: the pixels' appearance,
de-quantised), ``presets`` (``preset=``), ``tissue`` (the ``t1`` preset's
tissue classification), ``result`` (:class:`Segmentation`), ``outputs``
(file names, the written set, the report), ``figures`` (the pictures:
overlays, volume montages, heat maps with colour bars, label names),
``selection`` (K sweep on an image, its
plot), ``shared`` (one model for many images), ``windowed`` (images larger
than memory, window by window, with ``_window_work``, ``_window_exec`` and
``_window_outputs``).
"""

from .presets import preset_arguments
from .result import Segmentation
from .segment import (
    DEFAULT_K_RANGE,
    DEFAULT_MAX_FIT_SAMPLES,
    check_segment_count,
    segment,
)
from .selection import plot_selection, select_k
from .shared import (
    DEFAULT_PER_IMAGE,
    MODEL_OPTIONS,
    check_model_input,
    fit_shared_model,
    load_shared_model,
    save_shared_model,
)
from .tissue import TissueSegmentation, segment_tissue

__all__ = [
    "DEFAULT_K_RANGE",
    "DEFAULT_MAX_FIT_SAMPLES",
    "DEFAULT_PER_IMAGE",
    "MODEL_OPTIONS",
    "Segmentation",
    "TissueSegmentation",
    "check_model_input",
    "check_segment_count",
    "fit_shared_model",
    "load_shared_model",
    "plot_selection",
    "preset_arguments",
    "save_shared_model",
    "segment",
    "segment_tissue",
    "select_k",
]
