"""gmmseg: Gaussian-mixture image segmentation.

>>> import gmmseg
>>> img = gmmseg.read_image("scene.png")                      # doctest: +SKIP
>>> seg = gmmseg.segment(img, n_components=4, features="lab,position")  # doctest: +SKIP
>>> seg.labels, seg.proba, seg.log_likelihood, seg.overlay()  # doctest: +SKIP
>>> gmmseg.select_k(img, 1, 10).n_components                  # doctest: +SKIP
>>> seg = gmmseg.segment(img, n_components="auto")            # doctest: +SKIP
>>> seg.uncertainty, seg.anomaly_mask(0.001)                  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .errors import (
    ConvergenceWarning,
    GmmsegError,
    ImageReadError,
    LargeModelWarning,
    ModelFileError,
    NotFittedError,
    OutputExistsError,
)
from .features import FeatureExtractor
from .io import Image, as_image, read_image
from .mixture import GaussianMixture, SelectKResult
from .pipeline import Segmentation, plot_selection, segment, select_k

__all__ = [
    "ConvergenceWarning",
    "FeatureExtractor",
    "GaussianMixture",
    "GmmsegError",
    "Image",
    "ImageReadError",
    "LargeModelWarning",
    "ModelFileError",
    "NotFittedError",
    "OutputExistsError",
    "Segmentation",
    "SelectKResult",
    "__version__",
    "as_image",
    "plot_selection",
    "read_image",
    "segment",
    "select_k",
]
