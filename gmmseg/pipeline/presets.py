"""``segment(..., preset=NAME)``: a preset's values under the caller's.

:func:`with_presets` wraps :func:`gmmseg.pipeline.segment.segment` so that
a call with ``preset=`` takes the preset's arguments for every argument the
caller did not pass (an argument passed explicitly, even with its default
value, wins), runs the preset's method (the feature mixture, or
:func:`gmmseg.pipeline.tissue.segment_tissue`), and records in
``info["preset"]`` the preset, every value it set and what the caller
overrode.  :func:`preset_arguments` does the same merge for the other entry
points (``select_k``, ``fit_shared_model``), keeping what they take.
"""

from __future__ import annotations

import functools
import inspect

from ..presets import TISSUE_OPTIONS, auto_preset, check_preset


def preset_arguments(preset, given, accepted=None, *, method=None, what="this call"):
    """The arguments a call with ``preset`` runs with, and the report's record of it.

    Parameters
    ----------
    preset : str or Preset
    given : dict
        Arguments the caller passed explicitly; they win.
    accepted : collection of str, optional
        Keep only these names (the entry point's parameters).
    method : {"mixture", "tissue"}, optional
        Refuse a preset of another method (``what`` names the caller in the
        message).

    Returns
    -------
    arguments : dict
        The preset's settings updated with ``given``.
    record : dict
        ``{"name", "method", "settings": {name: value used}, "overridden":
        {name: preset's value}}``: every value the preset set, and the ones
        the caller replaced.
    """
    preset = check_preset(preset)
    if method is not None and preset.method != method:
        raise ValueError(
            f"preset {preset.name!r} runs the {preset.method} method, which {what} does not "
            "run; use segment or batch without a shared model")
    settings = dict(preset.settings)
    if accepted is not None:
        settings = {k: v for k, v in settings.items() if k in accepted}
    arguments = {**settings, **given}
    record = {
        "name": preset.name, "method": preset.method,
        "settings": {k: v for k, v in settings.items() if k not in given},
        "overridden": {k: v for k, v in settings.items() if k in given},
    }
    return arguments, record


def with_presets(segment):
    """Give ``segment`` its ``preset=`` argument (see the module docstring)."""
    signature = inspect.signature(segment)

    @functools.wraps(segment)
    def wrapper(*args, **kwargs):
        preset = kwargs.pop("preset", None)
        tissue_given = {k: kwargs.pop(k) for k in TISSUE_OPTIONS if k in kwargs}
        bound = signature.bind(*args, **kwargs)
        given = dict(bound.arguments)
        image = given.pop("image")
        if preset == "auto":
            from ..io import as_image

            image = as_image(image, channel_axis=given.get("channel_axis", -1),
                             spacing=given.get("spacing"))
            preset = auto_preset(image)
        if preset is None:
            if tissue_given:
                raise TypeError(
                    f"{', '.join(tissue_given)}: options of the tissue method; pass "
                    "preset='t1'")
            return segment(image, **given)
        arguments, record = preset_arguments(preset, {**given, **tissue_given})
        if record["method"] == "tissue":
            seg = _run_tissue(image, arguments, record)
        else:
            if tissue_given:
                raise TypeError(f"{', '.join(tissue_given)}: options of the tissue method; "
                                f"preset {record['name']!r} runs the feature mixture")
            seg = segment(image, **arguments)
        seg.info["preset"] = record
        return seg

    return wrapper


def _run_tissue(image, arguments, record):
    from .tissue import TISSUE_ARGUMENTS, segment_tissue

    foreign = sorted(set(arguments) - TISSUE_ARGUMENTS)
    if foreign:
        raise ValueError(
            f"preset {record['name']!r} classifies tissues by intensity and does not take "
            f"{', '.join(foreign)}")
    return segment_tissue(image, **arguments)
