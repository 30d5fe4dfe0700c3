"""One model for many images: fit it on pixels pooled from all, save it, apply it.

:func:`fit_shared_model` fits the features and the mixture the way
:func:`~gmmseg.pipeline.segment` does, on pixels drawn from every image, so
that label k means the same class in every output; the model file keeps the
feature extractor with the mixture so that it can be applied later
(``segment(image, model=..., feature_extractor=...)``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..errors import (GmmsegError, ModelFileError, OutputExistsError, counted, failure_reason,
                      one_line)
from ..features import FeatureExtractor
from ..io import read_image
from ..mixture import GaussianMixture
from .segment import fit_mixture, segment

#: Default number of valid pixels drawn from each image for a shared model.
DEFAULT_PER_IMAGE = 20_000

#: The options of :func:`segment` that shape a shared model, with segment's defaults.
MODEL_OPTIONS = {
    name: inspect.signature(segment).parameters[name].default
    for name in ("n_components", "features", "standardize", "pca", "covariance_type",
                 "random_state", "max_fit_samples", "init_params", "n_init", "max_iter",
                 "tol", "reg_covar", "n_jobs")
}


def _spatial_kind(ndim):
    return {2: "2-D images", 3: "volumes"}.get(ndim, f"{ndim}-D data")


def check_model_input(image, extractor: FeatureExtractor, *, path=None) -> None:
    """Raise a one-line :class:`GmmsegError` unless the model's features fit ``image``.

    Parameters
    ----------
    image : Image
    extractor : FeatureExtractor
        The fitted extractor stored with the model.
    path : path, optional
        Names the file in the message (default ``image.path``).

    Examples
    --------
    >>> import numpy as np
    >>> from gmmseg.io import Image
    >>> fx = FeatureExtractor("bands")
    >>> _ = fx.fit_transform(Image(np.zeros((4, 4, 3)), np.ones((4, 4), bool)))
    >>> check_model_input(Image(np.zeros((4, 4, 6)), np.ones((4, 4), bool)), fx, path="x.tif")
    Traceback (most recent call last):
    ...
    gmmseg.errors.GmmsegError: x.tif: model expects 3 channels, image has 6
    """
    where = path if path is not None else (image.path or "image")
    ndim = len(image.spatial_shape)
    if ndim != extractor.spatial_ndim_:
        raise GmmsegError(
            f"{where}: model expects {_spatial_kind(extractor.spatial_ndim_)}, "
            f"input is {'a volume' if ndim == 3 else 'a 2-D image'}")
    if image.n_channels != extractor.input_channels_:
        raise GmmsegError(
            f"{where}: model expects {counted(extractor.input_channels_, 'channel')}, "
            f"image has {image.n_channels}")


def fit_shared_model(
    paths: Iterable[str | os.PathLike],
    *,
    per_image: int | None = DEFAULT_PER_IMAGE,
    read_kwargs: Mapping | None = None,
    on_input: Callable[[str, str], None] | None = None,
    **options,
) -> tuple[GaussianMixture, FeatureExtractor]:
    """Fit one mixture on valid pixels pooled from many images.

    Each image is read in turn, at most ``per_image`` of its valid pixels are
    drawn (:meth:`FeatureExtractor.fit_many`), and the image is released;
    the feature statistics and the mixture are fitted on the pool (at most
    ``max_fit_samples`` rows of it).  Applying the result to every image
    (``run_batch(model=...)``) gives labels that mean the same class in all
    of them.  Inputs that cannot be used (unreadable, no valid pixel,
    another band count or dimensionality than the first readable one) are
    skipped and listed in ``model.metadata_["shared_fit"]["skipped"]``.

    Parameters
    ----------
    paths : iterable of path
    per_image : int or None, default=20000
        Pixels drawn from each image (None: all).
    read_kwargs : mapping, optional
        Passed to :func:`gmmseg.read_image` (``bands``, ``nodata``, ...).
    on_input : callable, optional
        ``on_input(path, error)`` after each file is read: ``error`` is ""
        for a file that joined the pool, else why it was skipped.
    **options :
        ``n_components``, ``features``, ``standardize``, ``pca``,
        ``covariance_type``, ``random_state``, ``max_fit_samples``,
        ``init_params``, ``n_init``, ``max_iter``, ``tol``, ``reg_covar``,
        ``n_jobs``: as for :func:`gmmseg.segment`, with its defaults
        (:data:`MODEL_OPTIONS`).

    Returns
    -------
    model : GaussianMixture
        Components in canonical order; ``metadata_`` holds ``"features"``
        (the extractor's ``to_dict()``) and ``"shared_fit"`` (images used,
        rows pooled, skipped files with their reasons).
    extractor : FeatureExtractor

    Raises
    ------
    GmmsegError
        No input could be used, or the pool has fewer distinct pixels than K.
    TypeError
        An option that is not one of the above.
    """
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise TypeError(f"fit_shared_model() got unexpected keyword arguments {unknown}")
    opts = {**MODEL_OPTIONS, **options}
    paths = [Path(p) for p in paths]
    skipped: list[list[str]] = []
    used: list[str] = []
    images = _usable_images(paths, dict(read_kwargs or {}), used, skipped,
                            on_input or (lambda path, error: None))
    extractor = FeatureExtractor(opts["features"], standardize=opts["standardize"],
                                 pca=opts["pca"])
    try:
        X = extractor.fit_many(images, per_image=per_image, random_state=opts["random_state"])
    except ValueError as err:
        if not used:
            if len(paths) == 1:
                raise GmmsegError(f"the input cannot be used to fit a shared model: "
                                  f"{': '.join(skipped[0]) if skipped else one_line(err)}") from err
            raise GmmsegError(
                f"none of the {counted(len(paths), 'input')} can be used to fit a shared model"
                + (f" (first problem: {skipped[0][0]}: {skipped[0][1]})" if skipped else "")
            ) from err
        raise GmmsegError(f"shared model: {one_line(err)}") from err
    params = {k: opts[k] for k in ("covariance_type", "random_state", "init_params", "n_init",
                                   "max_iter", "tol", "reg_covar", "n_jobs")}
    model, n_fit = fit_mixture(X, opts["n_components"], "shared model: ", params,
                               opts["max_fit_samples"], what="distinct pooled pixels")
    model.set_params(n_jobs=None)  # the thread count is the applier's choice
    model.metadata_ = {
        "features": extractor.to_dict(),
        "shared_fit": {
            "images": len(used),
            "per_image": per_image,
            "pooled_pixels": len(X),
            "fit_pixels": n_fit,
            "skipped": skipped,
        },
    }
    return model, extractor


def _usable_images(paths, read_kwargs, used, skipped, on_input):
    """The images of ``paths`` that can join one pool, one at a time; the rest in ``skipped``."""
    first: dict = {}  # ndim, channels and path of the first usable input
    for path in paths:
        try:
            image = read_image(path, **read_kwargs)
            if first:
                if image.ndim != first["ndim"]:
                    raise GmmsegError(
                        f"{path}: is {'a volume' if image.ndim == 3 else 'a 2-D image'}, "
                        f"unlike the first input {first['path']}")
                if image.n_channels != first["channels"]:
                    raise GmmsegError(
                        f"{path}: has {counted(image.n_channels, 'channel')}, the first input "
                        f"{first['path']} has {first['channels']}")
            if image.n_valid == 0:
                raise GmmsegError(f"{path}: no valid pixels (all masked, NaN or nodata)")
        except Exception as err:  # one bad input must not stop the fit
            reason = failure_reason(err, path)
            skipped.append([str(path), reason])
            on_input(str(path), reason)
            continue
        if not first:
            first.update(ndim=image.ndim, channels=image.n_channels, path=path)
        used.append(str(path))
        yield image
        del image
        on_input(str(path), "")


def save_shared_model(path, model: GaussianMixture, extractor: FeatureExtractor, *,
                      overwrite: bool = False) -> Path:
    """Write a shared model with its feature extractor (``.npz`` or ``.json``, no pickle).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    ValueError
        The extractor holds a user callable (code cannot be stored).
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{path}: model file exists (use overwrite=True)")
    metadata = dict(getattr(model, "metadata_", None) or {})
    metadata["features"] = extractor.to_dict()
    model.save(path, metadata=metadata)
    return path


def load_shared_model(path) -> tuple[GaussianMixture, FeatureExtractor]:
    """Read a model written by :func:`save_shared_model` (or ``gmmseg fit``).

    Raises
    ------
    ModelFileError
        The file is not a gmmseg model, or holds no fitted feature extractor
        matching the mixture.
    """
    path = Path(path)
    model = GaussianMixture.load(path)
    spec = model.metadata_.get("features")
    if spec is None:
        raise ModelFileError(
            f"{path}: the model stores no feature extractor, so it cannot be applied to "
            "images; make it with 'gmmseg fit'")
    try:
        extractor = FeatureExtractor.from_dict(spec)
    except ValueError as err:
        raise ModelFileError(f"{path}: {one_line(err)}") from err
    if not extractor.is_fitted:
        raise ModelFileError(f"{path}: the stored feature extractor is not fitted")
    if extractor.n_features_ != model.means_.shape[1]:
        raise ModelFileError(
            f"{path}: the feature extractor gives {counted(extractor.n_features_, 'feature')} but the "
            f"mixture has {model.means_.shape[1]}")
    return model, extractor
