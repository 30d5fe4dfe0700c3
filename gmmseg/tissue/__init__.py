"""Brain tissue classification: bias field, partial volume, spatial prior.

The model of FAST (Zhang, Brady & Smith, IEEE TMI 2001) and ANTs Atropos
(Avants et al., Neuroinformatics 2011) on arrays: :func:`classify_tissue`
takes a scan and a mask and returns tissue labels, partial-volume fractions,
the bias field and the restored image.  Modules: ``bias`` (B-spline field in
log intensity), ``partial_volume`` (pure and mixed classes), ``prior``
(composition prior, mean field), ``classify`` (the EM loop).  Knows no files.
"""

from .bias import (
    AUTO_FIELD_SPAN,
    COARSE_KNOT_DISTANCE,
    DEFAULT_KNOT_DISTANCE,
    SplineField,
)
from .classify import TissueResult, classify_tissue, field_span
from .partial_volume import PartialVolumeModel, compositions
from .prior import DEFAULT_BETA, CompositionPrior

__all__ = [
    "AUTO_FIELD_SPAN",
    "COARSE_KNOT_DISTANCE",
    "DEFAULT_BETA",
    "DEFAULT_KNOT_DISTANCE",
    "CompositionPrior",
    "PartialVolumeModel",
    "SplineField",
    "TissueResult",
    "classify_tissue",
    "compositions",
    "field_span",
]
