"""scikit-learn's estimator protocol, without scikit-learn.

This module owns what makes `GaussianMixture` an estimator that
scikit-learn's tools (``clone``, ``Pipeline``, ``GridSearchCV``,
``check_is_fitted``, pickling) accept: constructor parameters read and set
by name (nested ``step__param`` names too), the printed form, the estimator
tags, the fitted-state check, and the bookkeeping of the training data's
shape and column names (``n_features_in_``, ``feature_names_in_``), and
pickling with a version stamp.

scikit-learn is not imported here: it is an optional companion, not a
dependency.  The one exception is ``__sklearn_tags__``, which builds
scikit-learn's own ``Tags`` object and so imports it, but only scikit-learn
calls that method, when it is already imported.

It fits nothing and knows no array maths beyond shapes.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from .. import __version__
from ..errors import NotFittedError


def _feature_names(X):
    """The column names of a data frame whose columns are all strings, or None.

    As scikit-learn: numbered (non-string) columns are no names, and a mix of
    strings and other types is refused.
    """
    columns = getattr(X, "columns", None)
    if columns is None or isinstance(X, np.ndarray):
        return None
    names = np.asarray(list(columns), dtype=object)
    is_str = [isinstance(name, str) for name in names]
    if not any(is_str):
        return None
    if not all(is_str):
        raise TypeError(
            "X's column names must all be strings or all be other types; got "
            f"{sorted({type(name).__name__ for name in names})} (convert them with "
            "X.columns = X.columns.astype(str))"
        )
    return names


class _Estimator:
    """Base of gmmseg estimators: parameters by name, repr, tags, fitted state.

    A subclass takes every parameter as a keyword of ``__init__`` stored
    unchanged under its own name (what ``clone`` relies on), and names in
    ``_FITTED_MARKER`` an attribute that exists exactly when it is fitted.
    """

    _FITTED_MARKER = "n_features_in_"

    # ----- parameters -------------------------------------------------------

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep=True):
        """Constructor parameters as a dict.

        Parameters
        ----------
        deep : bool, default=True
            Also list the parameters of parameters that are estimators
            themselves, as ``name__parameter``.

        Returns
        -------
        dict
        """
        out = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{key}", val) for key, val in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        """Set constructor parameters; ``name__parameter`` reaches a nested estimator.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            A name that is not a parameter.
        """
        valid = self.get_params(deep=True)
        nested = {}
        for key, value in params.items():
            name, sep, sub_key = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters are {sorted(self._param_names())}"
                )
            if sep:
                nested.setdefault(name, {})[sub_key] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub_params in nested.items():
            if not hasattr(valid[name], "set_params"):
                raise ValueError(
                    f"invalid parameter '{name}__{next(iter(sub_params))}' for "
                    f"{type(self).__name__}: {name} is not an estimator")
            valid[name].set_params(**sub_params)
        return self

    def __repr__(self):
        """The class name and the parameters that differ from their defaults."""
        changed = []
        for p in inspect.signature(type(self).__init__).parameters.values():
            if p.name == "self":
                continue
            value = getattr(self, p.name)
            if isinstance(value, np.ndarray):
                changed.append(f"{p.name}=array{value.shape}")
            elif value is not p.default and value != p.default:
                changed.append(f"{p.name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    # ----- fitted state -----------------------------------------------------

    def __sklearn_is_fitted__(self):
        """Whether ``fit`` has run (what ``sklearn.utils.validation.check_is_fitted`` asks)."""
        return hasattr(self, self._FITTED_MARKER)

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X) first"
            )

    def _record_training_columns(self, X_in, n_features):
        """Remember the training data's width and column names (``fit``)."""
        names = _feature_names(X_in)
        if names is None:
            self.__dict__.pop("feature_names_in_", None)
        else:
            self.feature_names_in_ = names
        self.n_features_in_ = n_features

    def _check_columns(self, X_in, n_features):
        """Refuse data whose width, or column names, differ from the training data's.

        Columns named in a different order are refused, since the model
        would silently read them as the wrong features; a name missing on
        one side only is a warning, as in scikit-learn.  Call on a fitted model.
        """
        name = type(self).__name__
        fitted = getattr(self, "feature_names_in_", None)
        given = _feature_names(X_in)
        if fitted is not None and given is not None:
            if len(fitted) != len(given) or np.any(fitted != given):
                raise ValueError(
                    "The feature names should match those that were passed during fit: "
                    f"{name} was fitted on {list(fitted)}, X has {list(given)}"
                )
        elif fitted is not None:
            warnings.warn(f"X does not have valid feature names, but {name} was fitted "
                          "with feature names", UserWarning, stacklevel=4)
        elif given is not None:
            warnings.warn(f"X has feature names, but {name} was fitted without feature "
                          "names", UserWarning, stacklevel=4)
        if n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {name} is expecting "
                f"{self.n_features_in_} features as input"
            )

    # ----- pickling -----------------------------------------------------------

    def __getstate__(self):
        # Stamped with the version, as scikit-learn does: a pickle holds
        # private attributes that another version may lay out differently.
        return {**self.__dict__, "_gmmseg_version": __version__}

    def __setstate__(self, state):
        state = dict(state)
        version = state.pop("_gmmseg_version", None)
        if version != __version__:
            warnings.warn(
                f"this {type(self).__name__} was pickled by gmmseg {version} and is "
                f"unpickled by gmmseg {__version__}, which may break it or change its "
                "results; move models between versions with save() and load()",
                UserWarning, stacklevel=2)
        self.__dict__.update(state)

    # ----- scikit-learn's tags ----------------------------------------------

    def __sklearn_tags__(self):
        """scikit-learn's description of this estimator: a density estimator.

        Only scikit-learn calls this (through ``sklearn.utils.get_tags``),
        so importing it here costs nothing and keeps it optional: its
        ``Tags`` object is the one that its tools and checks validate.
        """
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            transformer_tags=None,
            regressor_tags=None,
            classifier_tags=None,
            input_tags=InputTags(two_d_array=True, sparse=False, allow_nan=False),
            requires_fit=True,
            non_deterministic=False,
        )
