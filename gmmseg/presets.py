"""Named recipes per modality: the options a kind of image needs, chosen by measurement.

A preset is a set of :func:`gmmseg.segment` arguments (features, K, prior,
mask) with a one-line summary and the measurement that justifies it (the
README's Presets section gives the figures and their commands).  Arguments
given explicitly always win over the preset's.  Presets whose ``method`` is
``"tissue"`` run :func:`gmmseg.tissue.classify_tissue` (bias field, partial
volume, composition prior) instead of the feature mixture.

The one check of a preset name is :func:`check_preset`; :func:`auto_preset`
is the rule by which ``preset="auto"`` picks one from what a file says it
is.  Holds data and checks only; runs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

#: Default strength of the tissue prior of the ``t1`` preset (the log-odds a
#: voxel gains when all its neighbours agree; see :mod:`gmmseg.tissue.prior`).
T1_SMOOTHING = 1.0


@dataclass(frozen=True)
class Preset:
    """A named recipe.

    Attributes
    ----------
    name : str
    summary : str
        One line, shown by ``gmmseg presets``.
    settings : mapping
        :func:`gmmseg.segment` keyword arguments the preset sets.
    method : {"mixture", "tissue"}
        What segments: the feature mixture of :func:`gmmseg.segment`, or
        the tissue classifier of :mod:`gmmseg.tissue`.
    """

    name: str
    summary: str
    settings: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    method: str = "mixture"

    def describe(self):
        """``name``, summary and settings as one line."""
        values = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{self.name}: {self.summary} ({values})"


def _preset(name, summary, method="mixture", **settings):
    return Preset(name, summary, MappingProxyType(settings), method)


#: Every preset, by name (``gmmseg presets`` lists them in this order).
PRESETS = MappingProxyType({p.name: p for p in (
    _preset("photo", "colour photos: CIE Lab colour and pixel position, connected regions "
                     "(the default for RGB pictures)",
            features="lab,position"),
    _preset("fluorescence", "fluorescence microscopy: 2 segments on background-subtracted "
                            "intensity with the Potts prior (nuclei Dice 0.890 against 0.820)",
            n_components=2, features="contrast", smoothing=1.0),
    _preset("t1", "T1-weighted brain MRI (skull-stripped or with mask=): CSF, GM, WM with "
                  "bias field, partial volume, noise-scaled edge-preserving smoothing and a "
                  "tissue prior, as FSL FAST",
            method="tissue", n_components=3, mask="nonzero", smoothing=T1_SMOOTHING,
            bias_field=True, partial_volume=True, denoise=True),
)})

#: Arguments only the tissue method takes (a mixture preset refuses them).
TISSUE_OPTIONS = ("bias_field", "partial_volume", "knot_distance", "denoise")


def check_preset(name, param="preset"):
    """The :class:`Preset` called ``name``; ``ValueError`` naming the known ones otherwise.

    Examples
    --------
    >>> check_preset("t1").method
    'tissue'
    """
    if isinstance(name, Preset):
        return name
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    raise ValueError(f"{param} must be one of {', '.join(PRESETS)}, got {name!r}")


#: What a file must say of itself for ``preset="auto"`` to pick a preset:
#: ``(meta key, value) -> preset name`` (a DICOM file's ``"modality"`` is its
#: Modality tag).  Empty until a preset is measured on a modality that a file
#: names: see :func:`auto_preset`.
AUTO_RULES = MappingProxyType({})


def auto_preset(image):
    """The preset a file asks for by what it says it is, or None.

    The rule: only where the file states its modality, and only for a
    preset measured on that modality.  Today no preset qualifies: DICOM
    files say ``Modality`` (CT, MR, ...), but ``MR`` does not say T1, and
    there is no measured CT preset; NIfTI, TIFF and PNG files say nothing.
    So ``"auto"`` keeps the modality-honest defaults everywhere.
    """
    meta = getattr(image, "meta", None) or {}
    for (key, value), name in AUTO_RULES.items():
        if str(meta.get(key, "")).upper() == value:
            return name
    return None
