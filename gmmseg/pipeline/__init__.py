"""From an image to a segmentation and its files.

``segment`` (image in, :class:`Segmentation` out), ``select_k`` (how many
segments), ``fit_shared_model`` (one model for many images) and the output
files of a segmentation (:mod:`gmmseg.pipeline.outputs`).  Glues io,
features, mixture, mrf and postprocess together; parses no command-line
option.
"""

from .outputs import output_paths, regions_request
from .result import Segmentation
from .segment import (
    DEFAULT_K_RANGE,
    DEFAULT_MAX_FIT_SAMPLES,
    candidate_ks,
    fit_sample,
    segment,
    stored_feature_extractor,
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

__all__ = [
    "DEFAULT_K_RANGE",
    "DEFAULT_MAX_FIT_SAMPLES",
    "DEFAULT_PER_IMAGE",
    "MODEL_OPTIONS",
    "Segmentation",
    "candidate_ks",
    "check_model_input",
    "fit_sample",
    "fit_shared_model",
    "load_shared_model",
    "output_paths",
    "plot_selection",
    "regions_request",
    "save_shared_model",
    "segment",
    "select_k",
    "stored_feature_extractor",
]
