"""Feature names and the feature spec grammar.

Owns the known feature names and the one function that validates a name
(:func:`check_feature_name`, used by :class:`FeatureItem` and
:func:`parse_feature_spec`, and so by :class:`~gmmseg.features.FeatureExtractor`,
the CLI and batch), what ``"auto"`` stands for on an image
(:func:`default_feature_names`), column weights, and the turning of any
accepted ``features`` value into a list of :class:`FeatureItem`.  It computes
no feature and fits nothing.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io import Image
from ._pixels import ImageLike, _to_image
from .builders import _BUILDERS

_KNOWN = ", ".join(["auto", *sorted(_BUILDERS)])


def check_feature_name(name: str, *, spec: str | None = None) -> None:
    """Raise unless ``name`` is a builder name or ``"auto"``.

    The one check of a feature name: :class:`FeatureItem` and
    :func:`parse_feature_spec` call it, so every path (the extractor, the CLI,
    batch) gives the same message for the same bad name.

    Parameters
    ----------
    name : str
        The name as it will be used (``parse_feature_spec`` lower-cases first).
    spec : str, optional
        The spec string the name comes from, quoted in the message.

    Raises
    ------
    ValueError
        Naming the unknown feature (and the spec) and listing the known ones,
        e.g. ``unknown feature 'colour'; known features: auto, bands, ...``.
    """
    if name == "auto" or name in _BUILDERS:
        return
    where = "" if spec is None else f" in spec {spec!r}"
    raise ValueError(f"unknown feature {name!r}{where}; known features: {_KNOWN}")


def default_feature_names(image: ImageLike, *, pooled: bool = False) -> list[str]:
    """Feature names that ``"auto"`` stands for on this image.

    Parameters
    ----------
    image : Image or ndarray
    pooled : bool, default False
        True when one model is fitted on pixels pooled from many images
        (:meth:`FeatureExtractor.fit_many`, shared models): position is
        then left out of the photo default.

    Returns
    -------
    list of str
        ``["lab", "position"]`` for a 2-D RGB photo, ``["lab"]`` for RGB
        rasters read by rasterio (georeferenced scenes), RGB volumes and
        pooled fits, ``["gray"]`` for single-channel images, ``["bands"]``
        for everything else.

    Notes
    -----
    Position is part of the photo default because segments of photos are
    mostly compact: on 50 BSDS500 validation photos (ODS over K = 2..10) it
    raised PRI from 0.719 to 0.747 and Covering from 0.419 to 0.458, and
    lowered VoI from 2.343 to 2.251 bits (``docs/quality.md``).  Grey
    images (microscopy, medical slices) and rasters have classes spread over
    the whole scene, where position would split them, and a model shared by
    many images should mean the same class wherever it appears.  With
    position in the model, a pixel's log-likelihood (the anomaly map) also
    says how usual its colour is *where it is*.
    """
    image = _to_image(image)
    if image.is_rgb:
        return ["lab", "position"] if image.is_photo and not pooled else ["lab"]
    if image.n_channels == 1:
        return ["gray"]
    return ["bands"]


# ---------------------------------------------------------------------------
# feature specs
# ---------------------------------------------------------------------------


def _check_weight(weight: Any, name: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)):
        raise TypeError(f"weight of feature {name!r} must be a number, got {weight!r}")
    value = float(weight)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"weight of feature {name!r} must be a finite number > 0, got {weight!r}")
    return value


@dataclass(frozen=True)
class FeatureItem:
    """One entry of a feature spec.

    Parameters
    ----------
    name : str
        A builder name (see ``FEATURE_BUILDERS``), ``"auto"``, or the name of
        a user callable.
    weight : float, default 1
        Multiplies the item's columns after standardisation (> 0).
    params : mapping, optional
        Keyword arguments for the builder, e.g. ``{"sigmas": (1, 8)}``.
    func : callable, optional
        A user feature ``func(image) -> array`` of shape ``spatial_shape`` or
        ``spatial_shape + (d,)``; ``name`` then only labels its columns.
    """

    name: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)
    func: Callable[[Image], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"feature name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "weight", _check_weight(self.weight, self.name))
        if not isinstance(self.params, Mapping):
            raise TypeError(
                f"params of feature {self.name!r} must be a mapping, "
                f"got {type(self.params).__name__}"
            )
        object.__setattr__(self, "params", dict(self.params))
        if self.func is not None:
            if not callable(self.func):
                raise TypeError(f"func of feature {self.name!r} must be callable")
            if self.params:
                raise ValueError(
                    f"feature {self.name!r} is a callable; params apply to named builders only"
                )
            return
        if self.name == "auto":
            if self.params:
                raise ValueError("feature 'auto' takes no params")
            return
        check_feature_name(self.name)
        try:
            inspect.signature(_BUILDERS[self.name].func).bind(None, **self.params)
        except TypeError as err:
            raise TypeError(f"bad params for feature {self.name!r}: {err}") from err

    @property
    def token(self) -> str:
        """The item as written in a spec string: ``name`` or ``name:weight``."""
        if self.weight == 1.0:
            return self.name
        short = format(self.weight, "g")
        return f"{self.name}:{short if float(short) == self.weight else repr(self.weight)}"


# "+" separates features, except inside a number's exponent ("1e+2").
_SEPARATOR = re.compile(r",|(?<![0-9][eE])\+")


def parse_feature_spec(spec: str) -> list[FeatureItem]:
    """Parse a CLI feature spec such as ``"lab,position:0.5,texture"``.

    Parameters
    ----------
    spec : str
        Feature names separated by ``,`` or ``+``; each may carry a column
        weight as ``name:weight`` (a number > 0). Names are case-insensitive.
        ``auto`` stands for :func:`default_feature_names` of the image.
        Builder parameters (e.g. texture ``sigmas``) are set through the
        Python API (:class:`FeatureItem`), not in the string.

    Returns
    -------
    list of FeatureItem

    Raises
    ------
    ValueError
        On an empty spec or entry, an unknown name (the message lists the known
        ones), a bad weight, or a name given twice.

    Examples
    --------
    >>> [(i.name, i.weight) for i in parse_feature_spec("lab+position:0.5")]
    [('lab', 1.0), ('position', 0.5)]
    """
    if not isinstance(spec, str):
        raise TypeError(f"feature spec must be a string, got {type(spec).__name__}")
    if not spec.strip():
        raise ValueError("feature spec is empty; give e.g. 'auto' or 'lab,position'")
    items: list[FeatureItem] = []
    for token in _SEPARATOR.split(spec):
        token = token.strip()
        if not token:
            raise ValueError(f"feature spec {spec!r} has an empty entry")
        name, colon, weight_text = token.partition(":")
        name = name.strip().lower()
        check_feature_name(name, spec=spec)
        weight = 1.0
        if colon:
            try:
                weight = float(weight_text)
            except ValueError as err:
                raise ValueError(
                    f"weight of feature {name!r} in spec {spec!r} must be a number > 0, "
                    f"got {weight_text.strip()!r}"
                ) from err
        if any(item.name == name for item in items):
            raise ValueError(f"feature {name!r} appears twice in spec {spec!r}")
        items.append(FeatureItem(name, weight))
    return items


def _callable_name(func: Callable, taken: set[str]) -> str:
    base = getattr(func, "__name__", "")
    if not base.isidentifier():  # lambdas, partials, callable objects
        base = "custom"
    name, i = base, 1
    while name in taken:
        name, i = f"{base}{i}", i + 1
    return name


def _normalize_spec(features: Any) -> list[FeatureItem]:
    """Turn any accepted ``features`` value into a list of FeatureItem."""
    if isinstance(features, str):
        return parse_feature_spec(features)
    entries = [features] if isinstance(features, FeatureItem) or callable(features) else features
    try:
        entries = list(entries)
    except TypeError as err:
        raise TypeError(
            "features must be a spec string, a FeatureItem, a callable or a list of "
            f"these; got {type(features).__name__}"
        ) from err
    if not entries:
        raise ValueError("features must name at least one feature, got an empty list")
    items: list[FeatureItem] = []
    for entry in entries:
        if isinstance(entry, str):
            items.extend(parse_feature_spec(entry))
        elif isinstance(entry, FeatureItem):
            items.append(entry)
        elif callable(entry):
            taken = {item.name for item in items}
            items.append(FeatureItem(_callable_name(entry, taken), func=entry))
        else:
            raise TypeError(
                "each feature must be a name, a FeatureItem or a callable; "
                f"got {type(entry).__name__}"
            )
    return items

