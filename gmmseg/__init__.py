"""gmmseg: Gaussian-mixture image segmentation."""

from .errors import (
    ConvergenceWarning,
    GmmsegError,
    ImageReadError,
    ModelFileError,
    OutputExistsError,
)
from .mixture import GaussianMixture

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "GaussianMixture",
    "GmmsegError",
    "ImageReadError",
    "ModelFileError",
    "OutputExistsError",
    "__version__",
]
