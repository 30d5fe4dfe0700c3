"""gmmseg: Gaussian-mixture image segmentation.

>>> import gmmseg
>>> img = gmmseg.read_image("scene.png")                      # doctest: +SKIP
>>> seg = gmmseg.segment(img, n_components=4, features="lab,position")  # doctest: +SKIP
>>> seg.labels, seg.proba, seg.log_likelihood, seg.overlay()  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .errors import (
    ConvergenceWarning,
    GmmsegError,
    ImageReadError,
    ModelFileError,
    OutputExistsError,
)
from .features import FeatureExtractor
from .io import Image, as_image, read_image
from .mixture import GaussianMixture
from .pipeline import Segmentation, segment

__all__ = [
    "ConvergenceWarning",
    "FeatureExtractor",
    "GaussianMixture",
    "GmmsegError",
    "Image",
    "ImageReadError",
    "ModelFileError",
    "OutputExistsError",
    "Segmentation",
    "__version__",
    "as_image",
    "read_image",
    "segment",
]
