"""What ``n_components="auto"`` counts segments on: the pixels' appearance, de-quantised.

K is the number of segments an image shows, so it is chosen on what the
pixels look like, which differs from the model's own features in three ways:

* ``position`` is left out.  A segment covers its area uniformly, and a
  uniform patch is no Gaussian in x, y: more components always fit it
  better, so every criterion keeps asking for more.
* Colour (``lab``, ``rgb``, ``hsv``) is taken in the camera's values, R, G,
  B (grey images: the intensity).  Sensor noise is additive there, so a
  flat patch is a Gaussian blob; L*a*b* bends that blob, most near black.
  The other features (``gray``, ``bands``, ``texture``, ``contrast``,
  callables) are kept as given.
* Integer data whose noise spans the integer steps is de-quantised: each
  value gets uniform noise of half a step either way, and values piled up
  at a channel's lowest or highest level (clipped by the sensor or the
  8-bit range) are spread beyond it by the noise level of the image, as
  the noise that was clipped would have spread them.  Otherwise narrow
  components chase the integer lattice and the pile-ups.  Data with
  piecewise-flat levels (noise under one step) keeps its exact values:
  there the levels are the segments.

The features are built for :data:`COUNT_SAMPLES` random pixels of the fit
sample (the pixels the model is fitted on).  This module builds features
and fits nothing; the labels' model is fitted on the model's own features.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..features import FeatureExtractor, FeatureItem
from ..features._pixels import _unit_float

#: Features that say where a pixel is, not what it looks like: K is chosen without them.
SPATIAL_FEATURES = ("position",)
#: Colour spaces that K is chosen on in the camera's own values (R, G, B).
COLOUR_SPACES = ("lab", "rgb", "hsv")
#: Pixels the clusters are counted on.  The count's sweep costs its
#: screening runs, which are as slow on 20,000 rows (the screening
#: subsample) as on the 150,000 of a photo's fit sample; on 5,000 it costs
#: about a tenth of the model's sweep, and it counts the segments of the
#: 90 synthetic images of ``scripts/check_select_k.py`` as on all pixels.
COUNT_SAMPLES = 5_000
# Builders of one pixel's values alone: the sampled pixels suffice to build them.
_PER_PIXEL = ("lab", "rgb", "hsv", "gray", "bands")
# sd of a normal variable = _MAD_TO_SD * its median absolute deviation; the
# difference of two neighbours has sqrt(2) times the noise's sd.
_MAD_TO_SD = 1.4826
_RGB = ("R", "G", "B")


def sample_rows(n, max_fit_samples, random_state):
    """The rows of ``n`` that a mixture is fitted on: None for all, else sorted indices.

    ``max_fit_samples`` random rows drawn with ``np.random.default_rng(random_state)``,
    so the same seed picks the same pixels for the K sweep and the model.
    """
    if max_fit_samples is None or n <= max_fit_samples:
        return None
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=int(max_fit_samples), replace=False))


def appearance_items(items, image):
    """The feature items K is chosen on, for the model's resolved ``items``.

    ``position`` is dropped and ``lab``, ``rgb`` and ``hsv`` become ``rgb``
    (``gray`` for a one-channel image), once, with the first one's weight;
    other items are kept.  Only position: the items themselves.

    Examples
    --------
    >>> from gmmseg.io import as_image
    >>> img = as_image(np.zeros((2, 2, 3), np.uint8))
    >>> [i.token for i in appearance_items([FeatureItem("lab"), FeatureItem("position")], img)]
    ['rgb']
    """
    colour = "rgb" if image.is_rgb else "gray"
    out = []
    for item in items:
        named = item.func is None
        if named and item.name in SPATIAL_FEATURES:
            continue
        if named and item.name in COLOUR_SPACES:
            item = FeatureItem(colour, item.weight)
        if item.func is not None or all(o.name != item.name for o in out):
            out.append(item)
    return out or list(items)


def appearance_features(image, valid, items, *, max_fit_samples, random_state, standardize=True,
                        pca=None, n_samples=COUNT_SAMPLES):
    """The rows the segments are counted on: appearance features, de-quantised.

    Parameters
    ----------
    image : Image
    valid : bool ndarray of ``image.spatial_shape``
        The pixels to segment.
    items : list of FeatureItem
        The model's features, resolved for ``image`` (``FeatureExtractor.resolve``).
    max_fit_samples : int or None
        Fit sample size, as for :func:`gmmseg.segment`.
    random_state : int or None
        Picks the fit sample (the one the model is fitted on), the pixels
        of it counted on, and the de-quantising noise.
    standardize, pca :
        As for :class:`~gmmseg.features.FeatureExtractor`; an integer
        ``pca`` larger than the appearance columns keeps them all.

    Returns
    -------
    extractor : FeatureExtractor
        Fitted on the de-quantised fit sample.
    X : (n, D) float32 ndarray
        One row per pixel counted on: ``n_samples`` random pixels of the fit
        sample (all of it when it is smaller, or ``n_samples`` is None).
    details : dict
        ``features`` (spec string), ``dequantized`` (names or indices of
        the channels de-quantised), ``noise`` (each channel's noise sd
        estimate in its units, None for float data), ``spread`` (pixels of
        the sample moved off a pile-up at a channel's extreme level).
    """
    chosen = appearance_items(items, image)
    flat_valid = np.flatnonzero(valid.reshape(-1))
    rows = sample_rows(len(flat_valid), max_fit_samples, random_state)
    pixels = flat_valid if rows is None else flat_valid[rows]
    rows = sample_rows(len(pixels), n_samples, random_state)
    pixels = pixels if rows is None else pixels[rows]
    rng = np.random.default_rng(random_state)
    per_pixel = all(i.func is None and i.name in _PER_PIXEL for i in chosen)
    channels = image.data.reshape(-1, image.n_channels)
    details = {"dequantized": [], "noise": None, "spread": 0}
    if per_pixel:
        # Only the sampled pixels are needed: a one-column image of them.
        values = _unit_float(channels[pixels], _unit(image), clip=False)
        source = dataclasses.replace(image, data=values[:, None, :],
                                     valid=np.ones((len(pixels), 1), bool), spacing=None,
                                     channels=_channel_names(image))
        sample_mask = None
    else:
        values = _unit_float(channels, _unit(image), clip=False)
        source = dataclasses.replace(image, data=values.reshape(image.data.shape),
                                     channels=_channel_names(image))
        sample_mask = np.zeros(valid.size, bool)
        sample_mask[pixels] = True
        sample_mask = sample_mask.reshape(valid.shape)
    if np.issubdtype(image.data.dtype, np.integer):
        noise = _noise_levels(image.data, valid, pixels)
        sample_values = channels[pixels]
        details.update(noise=noise.tolist(),
                       **_dequantize(values, sample_values, noise, _unit(image), rng))
        names = _channel_names(image)
        details["dequantized"] = [names[c] if names else c for c in details["dequantized"]]
    extractor = FeatureExtractor(chosen, standardize=standardize)
    X = extractor.fit_transform(source, valid=sample_mask, random_state=random_state)
    if pca is not None and (isinstance(pca, float) or pca < X.shape[1]):
        extractor = FeatureExtractor(chosen, standardize=standardize, pca=pca)
        X = extractor.fit_transform(source, valid=sample_mask, random_state=random_state)
    details["features"] = extractor.spec_string
    return extractor, X, details


def _channel_names(image):
    """The image's channel names; R, G, B for an RGB image whose names are implicit."""
    return _RGB if image.is_rgb and not image.channels else image.channels


def _unit(image):
    """What a float copy is divided by: the dtype's maximum for RGB (builders take
    float colour in [0, 1]), 1 for other images (their features keep the units)."""
    if image.is_rgb and np.issubdtype(image.data.dtype, np.integer):
        return float(np.iinfo(image.data.dtype).max)
    return 1.0


def _noise_levels(data, valid, pixels):
    """Each channel's noise sd, from the sampled pixels and their next neighbours.

    The robust estimate ``1.4826 * median |x_p - x_(p+1)| / sqrt(2)`` over
    sampled pixels ``p`` whose neighbour along the last spatial axis is
    valid.  Edges and texture take few of the pairs in most images, so the
    median sees the noise.  0 when most neighbours are equal.
    """
    width = data.shape[-2]
    flat = data.reshape(-1, data.shape[-1])
    nxt = pixels + 1
    keep = (nxt % width != 0) & (nxt < len(flat))
    keep[keep] = valid.reshape(-1)[nxt[keep]]
    p, q = pixels[keep], nxt[keep]
    if not len(p):
        return np.zeros(data.shape[-1])
    diff = np.abs(flat[p].astype(np.float64) - flat[q].astype(np.float64))
    return _MAD_TO_SD * np.median(diff, axis=0) / np.sqrt(2.0)


def _dequantize(values, sample_values, noise, unit, rng):
    """De-quantise the channels of ``values`` (float, scaled by ``unit``) in place.

    A channel is de-quantised when its noise spans the integer steps (the
    median neighbour difference is one step or more): every value moves by
    uniform noise in [-1/2, 1/2) step, and a value at the channel's lowest
    (highest) level in the sample, which stands for any value up to half a
    step above (below) it, moves to that half step minus (plus) a
    half-normal draw of the noise's sd: the clipped noise put back.  Returns ``dequantized`` (channel indices) and ``spread``
    (how many values left a pile-up).
    """
    done, spread = [], 0
    step = np.float32(1.0 / unit)
    for c in range(values.shape[1]):
        if noise[c] < _MAD_TO_SD / np.sqrt(2.0):  # median difference under one step
            continue
        column = values[:, c]
        raw_lo, raw_hi = sample_values[:, c].min(), sample_values[:, c].max()
        lo, hi = np.float32(raw_lo / unit), np.float32(raw_hi / unit)
        at_lo, at_hi = column == lo, column == hi
        column += (rng.random(len(column), dtype=np.float32) - np.float32(0.5)) * step
        if raw_lo < raw_hi:
            tail = np.float32(noise[c] / unit)
            for at, bound, sign in ((at_lo, lo, -1.0), (at_hi, hi, 1.0)):
                n = int(np.count_nonzero(at))
                draw = np.abs(rng.standard_normal(n, dtype=np.float32)) * tail
                column[at] = bound + np.float32(sign) * (draw - step / 2)
                spread += n
        done.append(c)
    return {"dequantized": done, "spread": spread}
