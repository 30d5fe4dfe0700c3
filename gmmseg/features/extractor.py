"""The fitted feature extractor.

Owns :class:`FeatureExtractor`: building the feature rows of an image's
valid pixels from a spec (named builders and user callables), fitting and
applying the column statistics (standardisation, weights, optional PCA),
pooled fits over many images, and the JSON-ready round trip of the fitted
state (``to_dict``/``from_dict``).  The array arithmetic lives in
:mod:`._stats`, the builders in :mod:`.builders`, names and specs in
:mod:`.spec`; this module never fits a mixture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import counted
from ..io import Image
from ._pixels import ImageLike, _map_rows, _to_image
from ._stats import _affine_in_place, _chunk_rows, _column_mean_std, _copy_rows, _fit_pca
from .builders import _BUILDERS
from .spec import FeatureItem, _normalize_spec, default_feature_names

logger = logging.getLogger(__name__)

_DICT_FORMAT = "gmmseg-features"
_DICT_VERSION = 1


def _check_pca(pca: Any) -> int | float | None:
    if pca is None:
        return None
    if isinstance(pca, (int, np.integer)) and not isinstance(pca, bool):
        if pca < 1:
            raise ValueError(f"pca must be a number of components >= 1, got {pca}")
        return int(pca)
    if isinstance(pca, (float, np.floating)):
        if not 0.0 < pca < 1.0:
            raise ValueError(
                f"pca as a float is the variance fraction to keep and must be in (0, 1), got {pca}"
            )
        return float(pca)
    raise TypeError(f"pca must be None, an int or a float in (0, 1), got {pca!r}")


def _jsonable(value: Any, where: str) -> Any:
    """A JSON-ready copy of a builder parameter (tuples become lists)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    raise ValueError(f"{where} = {value!r} cannot be stored as JSON")


# ---------------------------------------------------------------------------
# FeatureExtractor
# ---------------------------------------------------------------------------


class FeatureExtractor:
    """Build, standardise, weight and optionally PCA-reduce per-pixel features.

    Parameters
    ----------
    features : str, FeatureItem, callable, or list of these, default "auto"
        A spec string (``"lab,position:0.5"``, see :func:`parse_feature_spec`),
        or a list mixing builder names, :class:`FeatureItem` and user callables
        ``f(image) -> array`` of shape ``spatial_shape`` (one column) or
        ``spatial_shape + (d,)``. Callables receive the :class:`~gmmseg.io.Image`.
    standardize : bool, default True
        Centre each column on its mean and divide by its std over the fitted
        valid rows (a constant column is only centred). With False the columns
        keep their units (only weights apply).
    pca : int or float, optional
        Keep this many principal components (int), or the fewest components
        explaining at least this fraction of the variance (float in (0, 1)).
        Computed after standardisation and weighting.

    Attributes
    ----------
    items_ : list of FeatureItem
        The spec with ``"auto"`` resolved for the fitted image.
    names_ : list of str
        Column names before PCA, e.g. ``["L", "a", "b", "x", "y"]``.
    n_features_ : int
        Number of output columns (after PCA).
    mean_, scale_ : (D,) float64 ndarray
        Subtracted mean and divisor of each column before PCA (0 and 1 when
        ``standardize=False``).
    weights_ : (D,) float64 ndarray
        Column weights from the spec.
    pca_components_ : (n_features_, D) float64 ndarray or None
        Principal axes (rows), largest variance first.
    pca_mean_ : (D,) float64 ndarray or None
    explained_variance_ratio_ : (n_features_,) float64 ndarray or None
    input_channels_ : int
        Channel count of the fitted image; ``transform`` requires the same.
    spatial_ndim_ : int
        2 for images, 3 for volumes.

    Examples
    --------
    >>> import numpy as np
    >>> from gmmseg.io import Image
    >>> rng = np.random.default_rng(0)
    >>> img = Image(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
    ...             np.ones((8, 8), bool), channels=("R", "G", "B"))
    >>> fx = FeatureExtractor("lab,position:0.5")
    >>> X = fx.fit_transform(img)
    >>> X.shape, X.dtype, fx.names_
    ((64, 5), dtype('float32'), ['L', 'a', 'b', 'x', 'y'])
    """

    def __init__(
        self,
        features: Any = "auto",
        *,
        standardize: bool = True,
        pca: int | float | None = None,
    ):
        if not isinstance(standardize, (bool, np.bool_)):
            raise TypeError(f"standardize must be True or False, got {standardize!r}")
        self.features = features
        self.standardize = bool(standardize)
        self.pca = _check_pca(pca)
        self._items = _normalize_spec(features)

    def __repr__(self) -> str:
        return (
            f"FeatureExtractor({self.spec_string!r}, standardize={self.standardize}, "
            f"pca={self.pca!r})"
        )

    @property
    def spec_string(self) -> str:
        """The spec as a string, e.g. ``"lab,position:0.5"`` (``auto`` resolved once fitted).

        Builder params are not shown; callables appear by their name.
        """
        items = getattr(self, "items_", self._items)
        return ",".join(item.token for item in items)

    @property
    def is_fitted(self) -> bool:
        """Whether fit statistics are available."""
        return hasattr(self, "mean_")

    # -- building -----------------------------------------------------------

    def resolve(self, image: ImageLike) -> list[FeatureItem]:
        """The items the spec stands for on ``image`` (``"auto"`` resolved); computes nothing.

        Examples
        --------
        >>> import numpy as np
        >>> [i.name for i in FeatureExtractor("auto").resolve(np.zeros((4, 4), np.float32))]
        ['gray']
        """
        return self._resolve(_to_image(image))

    def _resolve(self, image: Image, *, pooled: bool = False) -> list[FeatureItem]:
        # A name given besides "auto" keeps its own weight and is not repeated.
        named = {item.name for item in self._items if item.func is None}
        items: list[FeatureItem] = []
        for item in self._items:
            if item.name == "auto" and item.func is None:
                items.extend(FeatureItem(n, item.weight)
                             for n in default_feature_names(image, pooled=pooled)
                             if n not in named)
            else:
                items.append(item)
        return items

    def _raw_rows(
        self, image: Image, items: list[FeatureItem], mask: np.ndarray | None, n_rows: int,
        maps: dict | None = None,
    ) -> tuple[np.ndarray, list[str], list[int]]:
        """Unscaled feature rows of the valid pixels, in C order.

        Returns the (n_rows, D) float32 matrix, the column names and the width
        of each item. ``mask`` is the flat valid mask, None when all are valid.
        ``maps``: see :meth:`fit_transform`.
        """
        spatial = tuple(image.spatial_shape)
        # Column names first: checks every named builder against the image
        # before any heavy computation. Callables must run to reveal their width.
        blocks: list[np.ndarray | None] = []
        names: list[str] = []
        widths: list[int] = []
        for item in items:
            if item.func is None:
                cols = _BUILDERS[item.name].columns(image, **item.params)
                blocks.append(None)
            else:
                block = _user_feature(item, image, spatial)
                cols = [item.name] if block.shape[-1] == 1 else [
                    f"{item.name}_{j}" for j in range(block.shape[-1])
                ]
                blocks.append(block)
            names.extend(cols)
            widths.append(len(cols))

        X = np.empty((n_rows, len(names)), np.float32)
        start = 0
        per_pixel = []      # written together, stripe by stripe, while X's rows are in cache
        for item, block, width in zip(items, blocks, widths):
            columns = slice(start, start + width)
            start += width
            if block is None:
                builder = _BUILDERS[item.name]
                if builder.pixel_map is not None:
                    keep = None
                    if maps is not None and item.name in maps and maps[item.name] is None:
                        keep = maps[item.name] = np.empty(spatial + (width,), np.float32)
                    per_pixel.append((builder.pixel_map(image, **item.params), columns, keep))
                    continue
                block = builder.func(image, **item.params)
            _copy_rows(X[:, columns], block.reshape(-1, width), mask)
            del block
        if per_pixel:
            _map_rows(image.data, per_pixel, mask, X)
        _check_finite(X, items, widths)
        return X, names, widths

    @staticmethod
    def _mask(image: Image, valid: np.ndarray | None) -> tuple[np.ndarray | None, int]:
        mask = image.valid
        if valid is not None:
            valid = np.asarray(valid)
            if valid.dtype != bool:
                raise TypeError(f"valid must be a boolean array, got dtype {valid.dtype}")
            if valid.shape != tuple(image.spatial_shape):
                raise ValueError(
                    f"valid must have the image's spatial shape {tuple(image.spatial_shape)}, "
                    f"got {valid.shape}"
                )
            mask = mask & valid
        n = int(np.count_nonzero(mask))
        if n == mask.size:
            return None, n
        return mask.reshape(-1), n

    # -- fitting and applying -------------------------------------------------

    def fit_transform(
        self,
        image: ImageLike,
        *,
        valid: np.ndarray | None = None,
        sample: int | None = None,
        random_state: int | np.random.Generator | None = None,
        maps: dict | None = None,
    ) -> np.ndarray:
        """Fit the column statistics (and PCA) on an image and return its features.

        Parameters
        ----------
        image : Image or ndarray
            2-D image ``(H, W, C)`` or volume ``(Z, H, W, C)``; not modified.
        valid : bool ndarray of shape ``image.spatial_shape``, optional
            Extra mask, combined (AND) with ``image.valid``.
        sample : int, optional
            Estimate the statistics on this many randomly chosen valid rows
            instead of all of them (faster on huge images). Default: all rows,
            exact and deterministic.
        random_state : int or numpy Generator, optional
            Seed for ``sample``.
        maps : dict, optional
            Per-pixel maps the features compute anyway, to keep: for each key
            that names a per-pixel builder of the spec (``"lab"``, ``"rgb"``,
            ``"hsv"``, ``"gray"``, ``"bands"``, ``"position"``) with value
            None, the builder's unscaled output over every pixel, shape
            ``spatial_shape + (d,)`` float32, is stored there (what the
            builder alone would return, at ``4 d`` bytes a pixel); other keys
            are left as they are.  :func:`gmmseg.segment` keeps the Lab map
            of a photo for its regions this way instead of converting twice.

        Returns
        -------
        X : (n_valid, n_features_) float32 C-contiguous ndarray
            One row per valid pixel, in C order of the spatial shape.

        Raises
        ------
        ValueError
            If no pixel is valid, a builder does not suit the image, a feature
            is NaN or infinite at a valid pixel, or ``pca`` asks for more
            components than there are columns.
        """
        image = _to_image(image)
        items = self._resolve(image)
        mask, n_valid = self._mask(image, valid)
        if n_valid == 0:
            raise ValueError(
                f"image {image.name!r} has no valid pixels to fit the feature statistics on"
            )
        if sample is not None and (
            isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1
        ):
            raise ValueError(f"sample must be a positive number of rows, got {sample!r}")

        X, names, widths = self._raw_rows(image, items, mask, n_valid, maps)
        fit_rows = X
        if sample is not None and sample < n_valid:
            rng = np.random.default_rng(random_state)
            fit_rows = X[np.sort(rng.choice(n_valid, size=int(sample), replace=False))]
        self._fit_statistics(fit_rows, items, names, widths, image, also=X)
        del fit_rows
        logger.debug(
            "features %s on %s: %d valid rows, columns %s -> %d",
            self.spec_string, image.name, n_valid, names, self.n_features_,
        )
        return self._project(X)

    def _fit_statistics(
        self,
        fit_rows: np.ndarray,
        items: list[FeatureItem],
        names: list[str],
        widths: list[int],
        image: Image,
        *,
        also: np.ndarray | None = None,
    ) -> None:
        """Fit the column statistics (and PCA) on raw rows and store the fitted state.

        ``fit_rows`` (n, D) raw float32 rows are standardised and weighted in
        place, and so is ``also`` (the full matrix ``fit_rows`` was sampled
        from) when given.  ``image`` is a representative image: its channel
        count and number of spatial dimensions are what ``transform`` will
        require.
        """
        d = fit_rows.shape[1]
        weights = np.repeat([item.weight for item in items], widths).astype(np.float64)
        if self.standardize:
            mean, std = _column_mean_std(fit_rows)
            # A (numerically) constant column is centred but not scaled.
            flat = (std == 0) | (std <= np.finfo(np.float32).eps * np.abs(mean))
            scale = np.where(flat, 1.0, std)
        else:
            mean, scale = np.zeros(d), np.ones(d)
        factor = weights / scale
        if also is not None and also is not fit_rows:
            _affine_in_place(also, mean, factor)
        _affine_in_place(fit_rows, mean, factor)

        components = pca_mean = ratio = None
        if self.pca is not None:
            components, pca_mean, ratio = _fit_pca(fit_rows, self.pca)

        self.items_ = items
        self.names_ = names
        self._widths = widths
        self.mean_ = mean
        self.scale_ = scale
        self.weights_ = weights
        self.pca_components_ = components
        self.pca_mean_ = pca_mean
        self.explained_variance_ratio_ = ratio
        self.input_channels_ = int(image.n_channels)
        self.spatial_ndim_ = len(image.spatial_shape)
        self.n_features_ = d if components is None else components.shape[0]

    def fit_many(
        self,
        images: Iterable[ImageLike],
        *,
        per_image: int | None = 20_000,
        random_state: int | np.random.Generator | None = None,
    ) -> np.ndarray:
        """Fit the column statistics (and PCA) on rows pooled from several images.

        The images are visited one at a time: each one's feature rows are
        computed, at most ``per_image`` of its valid rows are drawn at random
        and kept, and the image is released before the next is read, so
        memory holds one image plus the pooled sample.  Every image counts
        with at most ``per_image`` rows, so a large image does not drown the
        small ones.  Use this to fit one model whose labels mean the same in
        every image.

        Parameters
        ----------
        images : iterable of Image or ndarray
            2-D images or volumes, all with the same channel count and number
            of spatial dimensions (sizes may differ).  A generator that reads
            files lazily keeps one image in memory at a time.  Images without
            a valid pixel contribute no rows.
        per_image : int or None, default=20000
            Rows drawn from each image (all valid rows when it has fewer, or
            when None).
        random_state : int or numpy Generator, optional
            Seeds the per-image draws (one generator for the whole sequence).

        Returns
        -------
        X : (n_pooled, n_features_) float32 C-contiguous ndarray
            The pooled rows with the fitted statistics applied, image by image
            in the order given, each image's rows in C order of its pixels.

        Raises
        ------
        ValueError
            If ``images`` is empty, no image has a valid pixel, or the images
            do not all give the same feature columns (the message names the
            first image that differs).

        Examples
        --------
        >>> import numpy as np
        >>> from gmmseg.io import Image
        >>> rng = np.random.default_rng(0)
        >>> imgs = [Image(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        ...               np.ones((8, 8), bool), channels=("R", "G", "B")) for _ in range(3)]
        >>> fx = FeatureExtractor("lab")
        >>> fx.fit_many(imgs, per_image=10, random_state=0).shape
        (30, 3)
        """
        if per_image is not None and (
            isinstance(per_image, bool)
            or not isinstance(per_image, (int, np.integer))
            or per_image < 1
        ):
            raise ValueError(
                f"per_image must be a positive number of rows or None, got {per_image!r}"
            )
        rng = np.random.default_rng(random_state)
        pooled: list[np.ndarray] = []
        first: Image | None = None
        items: list[FeatureItem] = []
        names: list[str] = []
        widths: list[int] = []
        n_images = 0
        for image in images:
            image = _to_image(image)
            n_images += 1
            if first is None:
                first, items = image, self._resolve(image, pooled=True)
            else:
                self._check_like(image, first, items)
            mask, n_valid = self._mask(image, None)
            if n_valid == 0:
                logger.debug("features %s: %s has no valid pixel", self.spec_string, image.name)
                continue
            X, image_names, image_widths = self._raw_rows(image, items, mask, n_valid)
            if not widths:
                names, widths = image_names, image_widths
            elif image_widths != widths:
                raise ValueError(
                    f"image {image.name!r} gives feature columns {image_names}, but the "
                    f"images before it gave {names}"
                )
            if per_image is not None and per_image < n_valid:
                X = X[np.sort(rng.choice(n_valid, size=int(per_image), replace=False))]
            pooled.append(X)
            del X
        if first is None:
            raise ValueError("fit_many needs at least one image, got none")
        if not pooled:
            raise ValueError(
                (f"none of the {counted(n_images, 'image')} has a" if n_images > 1
                 else "the image has no") + " valid pixel to fit the feature statistics on"
            )
        rows = pooled[0] if len(pooled) == 1 else np.concatenate(pooled)
        del pooled
        self._fit_statistics(rows, items, names, widths, first)
        logger.debug(
            "features %s on %d images: %d pooled rows, columns %s -> %d",
            self.spec_string, n_images, rows.shape[0], names, self.n_features_,
        )
        return self._project(rows)

    def _check_like(self, image: Image, first: Image, items: list[FeatureItem]) -> None:
        """Raise unless ``image`` gives the same features as ``first`` (see fit_many)."""
        ndim, first_ndim = len(image.spatial_shape), len(first.spatial_shape)
        if ndim != first_ndim:
            raise ValueError(
                f"image {image.name!r} has {ndim} spatial dimensions, but {first.name!r} "
                f"has {first_ndim}; fit 2-D images and volumes separately"
            )
        if image.n_channels != first.n_channels:
            raise ValueError(
                f"image {image.name!r} has {counted(image.n_channels, 'channel')}, but "
                f"{first.name!r} has {first.n_channels}; all images must have the same bands"
            )
        resolved = self._resolve(image, pooled=True)
        if resolved != items:
            raise ValueError(
                f"features {self.spec_string!r} resolve to "
                f"{','.join(i.token for i in resolved)!r} on image {image.name!r} but to "
                f"{','.join(i.token for i in items)!r} on {first.name!r}"
            )

    def fit(
        self,
        image: ImageLike,
        *,
        valid: np.ndarray | None = None,
        sample: int | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> FeatureExtractor:
        """Fit the statistics only; see :meth:`fit_transform`. Returns self."""
        self.fit_transform(image, valid=valid, sample=sample, random_state=random_state)
        return self

    def transform(
        self, image: ImageLike, *, valid: np.ndarray | None = None, maps: dict | None = None
    ) -> np.ndarray:
        """Features of an image with the fitted statistics.

        Parameters
        ----------
        image : Image or ndarray
            Must have the fitted image's channel count and number of spatial
            dimensions; its size may differ.
        valid : bool ndarray of shape ``image.spatial_shape``, optional
            Extra mask, combined (AND) with ``image.valid``.
        maps : dict, optional
            Per-pixel maps to keep, as for :meth:`fit_transform`.

        Returns
        -------
        X : (n_valid, n_features_) float32 C-contiguous ndarray
            ``n_valid`` may be 0.

        Raises
        ------
        ValueError
            If the extractor is not fitted or the image does not match it.
        """
        if not self.is_fitted:
            raise ValueError("this FeatureExtractor is not fitted yet; call fit_transform first")
        image = _to_image(image)
        ndim = len(image.spatial_shape)
        if ndim != self.spatial_ndim_:
            kinds = {2: "2-D images", 3: "volumes"}
            raise ValueError(
                f"the feature extractor was fitted on {kinds.get(self.spatial_ndim_)}; "
                f"image {image.name!r} has {ndim} spatial dimensions"
            )
        if image.n_channels != self.input_channels_:
            raise ValueError(
                f"features {self.spec_string!r} were fitted on images with "
                f"{counted(self.input_channels_, 'channel')}; image {image.name!r} has "
                f"{image.n_channels}"
            )
        mask, n_valid = self._mask(image, valid)
        X, names, widths = self._raw_rows(image, self.items_, mask, n_valid, maps)
        if widths != self._widths:
            raise ValueError(
                f"image {image.name!r} gives feature columns {names}, but the extractor was "
                f"fitted on columns {self.names_}"
            )
        _affine_in_place(X, self.mean_, self.weights_ / self.scale_)
        return self._project(X)

    def _project(self, X: np.ndarray) -> np.ndarray:
        if self.pca_components_ is None:
            return X
        n = X.shape[0]
        k = self.pca_components_.shape[0]
        basis = self.pca_components_.T.astype(np.float32)
        centre = self.pca_mean_.astype(np.float32)
        out = np.empty((n, k), np.float32)
        step = _chunk_rows(X.shape[1])
        for r0 in range(0, n, step):
            np.matmul(X[r0 : r0 + step] - centre, basis, out=out[r0 : r0 + step])
        return out

    # -- windows of a larger image (gmmseg.pipeline.windowed) -------------------

    def resolved_items(self, image: ImageLike) -> list[FeatureItem]:
        """The spec with ``"auto"`` resolved for ``image`` (``items_`` once fitted)."""
        return list(self.items_) if self.is_fitted else self._resolve(_to_image(image))

    def raw_rows(
        self,
        image: ImageLike,
        *,
        valid: np.ndarray | None = None,
        items: list[FeatureItem] | None = None,
    ) -> np.ndarray:
        """Unscaled feature rows of an image's valid pixels, in C order.

        The rows :meth:`fit_rows` fits on; ``items`` (default
        :meth:`resolved_items`) may carry extra builder parameters, such as
        the whole image's ``offset`` for ``texture`` on a window of it.

        Returns
        -------
        (n_valid, D) float32 ndarray
        """
        image = _to_image(image)
        items = self.resolved_items(image) if items is None else items
        mask, n_valid = self._mask(image, valid)
        return self._raw_rows(image, items, mask, n_valid)[0]

    def fit_rows(self, rows: np.ndarray, image: ImageLike) -> np.ndarray:
        """Fit the column statistics (and PCA) on raw rows gathered elsewhere.

        ``fit_transform(image, sample=n, random_state=s)`` fits on the raw
        rows of ``n`` random valid pixels; given the same rows (from
        :meth:`raw_rows` of windows of the image), this fits the same
        statistics, bit for bit.  Only named features (no callables).

        Parameters
        ----------
        rows : (n, D) float32 ndarray
            Raw rows; standardised and weighted in place.
        image : Image or ndarray
            A representative image (a window): its channel count, spatial
            dimensions and resolved spec are what :meth:`transform` requires.

        Returns
        -------
        (n, n_features_) float32 ndarray
            ``rows`` with the fitted statistics applied.
        """
        image = _to_image(image)
        items = self._resolve(image)
        names: list[str] = []
        widths: list[int] = []
        for item in items:
            if item.func is not None:
                raise ValueError(f"custom feature {item.name!r} cannot be fitted on gathered "
                                 "rows; use named features")
            cols = _BUILDERS[item.name].columns(image, **item.params)
            names.extend(cols)
            widths.append(len(cols))
        if rows.ndim != 2 or rows.shape[1] != len(names) or rows.dtype != np.float32:
            raise ValueError(f"rows must be (n, {len(names)}) float32 for columns {names}, "
                             f"got {rows.shape} {rows.dtype}")
        self._fit_statistics(rows, items, names, widths, image)
        return self._project(rows)

    # -- persistence -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (spec and fitted statistics).

        Returns
        -------
        dict
            Only lists, numbers, strings, booleans and None.

        Raises
        ------
        ValueError
            If the spec holds a user callable (code cannot be stored) or a
            builder parameter that is not JSON data.
        """
        items = getattr(self, "items_", self._items)
        features = []
        for item in items:
            if item.func is not None:
                raise ValueError(
                    f"feature {item.name!r} is a user callable and cannot be saved; "
                    "use named features to store the extractor"
                )
            features.append(
                {
                    "name": item.name,
                    "weight": item.weight,
                    "params": _jsonable(dict(item.params), f"params of feature {item.name!r}"),
                }
            )
        fitted = None
        if self.is_fitted:
            has_pca = self.pca_components_ is not None
            fitted = {
                "names": list(self.names_),
                "widths": list(self._widths),
                "mean": self.mean_.tolist(),
                "scale": self.scale_.tolist(),
                "weights": self.weights_.tolist(),
                "pca_components": self.pca_components_.tolist() if has_pca else None,
                "pca_mean": self.pca_mean_.tolist() if has_pca else None,
                "explained_variance_ratio": (
                    self.explained_variance_ratio_.tolist() if has_pca else None
                ),
                "input_channels": self.input_channels_,
                "spatial_ndim": self.spatial_ndim_,
            }
        return {
            "format": _DICT_FORMAT,
            "version": _DICT_VERSION,
            "features": features,
            "standardize": self.standardize,
            "pca": self.pca,
            "fitted": fitted,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureExtractor:
        """Rebuild an extractor written by :meth:`to_dict`.

        Raises
        ------
        ValueError
            If ``d`` is not such a description or is inconsistent.
        """
        if not isinstance(d, Mapping) or d.get("format") != _DICT_FORMAT:
            raise ValueError(
                f"not a gmmseg feature extractor description (format {_DICT_FORMAT!r})"
            )
        if d.get("version") != _DICT_VERSION:
            raise ValueError(
                f"feature extractor description has version {d.get('version')!r}; "
                f"this gmmseg reads version {_DICT_VERSION}"
            )
        try:
            items = [
                FeatureItem(f["name"], f["weight"], f.get("params") or {}) for f in d["features"]
            ]
            self = cls(items, standardize=d["standardize"], pca=d["pca"])
            fitted = d["fitted"]
            if fitted is None:
                return self
            names = [str(n) for n in fitted["names"]]
            widths = [int(w) for w in fitted["widths"]]
            vectors = {
                key: np.asarray(fitted[key], dtype=np.float64)
                for key in ("mean", "scale", "weights")
            }
            components = fitted["pca_components"]
            components = None if components is None else np.asarray(components, np.float64)
            pca_mean = fitted["pca_mean"]
            ratio = fitted["explained_variance_ratio"]
            n_columns = len(names)
            problems = []
            if sum(widths) != n_columns or len(widths) != len(items):
                problems.append("widths do not match the names and features")
            if any(v.shape != (n_columns,) for v in vectors.values()):
                problems.append("mean/scale/weights do not match the column names")
            if not np.all(vectors["scale"] > 0):
                problems.append("scale must be positive")
            if components is not None and (
                components.ndim != 2 or components.shape[1] != n_columns or pca_mean is None
            ):
                problems.append("pca_components do not match the column names")
            if problems:
                raise ValueError("; ".join(problems))
            self.items_ = items
            self.names_ = names
            self._widths = widths
            self.mean_ = vectors["mean"]
            self.scale_ = vectors["scale"]
            self.weights_ = vectors["weights"]
            self.pca_components_ = components
            self.pca_mean_ = None if components is None else np.asarray(pca_mean, np.float64)
            self.explained_variance_ratio_ = (
                None if components is None else np.asarray(ratio, np.float64)
            )
            self.input_channels_ = int(fitted["input_channels"])
            self.spatial_ndim_ = int(fitted["spatial_ndim"])
            self.n_features_ = n_columns if components is None else components.shape[0]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed feature extractor description: {err}") from err
        return self


def _user_feature(item: FeatureItem, image: Image, spatial: tuple[int, ...]) -> np.ndarray:
    """A callable feature's block for ``image``, ``spatial + (d,)``; bad results named."""
    try:
        block = np.asarray(item.func(image))
    except Exception as err:
        raise ValueError(
            f"custom feature {item.name!r} failed: {type(err).__name__}: {err}"
        ) from err
    if block.dtype.kind not in "biuf":
        raise TypeError(
            f"custom feature {item.name!r} must return real numbers, got dtype {block.dtype}"
        )
    if block.shape == spatial:
        return block[..., np.newaxis]
    if block.ndim == len(spatial) + 1 and block.shape[:-1] == spatial and block.shape[-1] > 0:
        return block
    raise ValueError(
        f"custom feature {item.name!r} returned shape {block.shape}; expected {spatial} "
        f"or {spatial} + (d,)"
    )


def _check_finite(X: np.ndarray, items: list[FeatureItem], widths: list[int]) -> None:
    """Raise if ``X`` holds NaN or inf, naming the first feature responsible."""
    step = _chunk_rows(X.shape[1])
    if all(np.isfinite(X[r0 : r0 + step]).all() for r0 in range(0, X.shape[0], step)):
        return
    start = 0
    for item, width in zip(items, widths):
        bad = int(np.count_nonzero(~np.isfinite(X[:, start : start + width]).all(axis=1)))
        if bad:
            raise ValueError(
                f"feature {item.name!r} is NaN or infinite at {counted(bad, 'valid pixel')}; "
                "mark those pixels invalid or fix the feature"
            )
        start += width

