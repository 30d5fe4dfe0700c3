"""Gaussian mixture models fitted by EM, vectorised and streamed over row chunks.

:class:`GaussianMixture` follows scikit-learn's names so that it can be
swapped in for ``sklearn.mixture.GaussianMixture``; :func:`select_k` fits one
per number of components and keeps the best by BIC, AIC or ICL.

Modules, each with one concern (dependencies point down this list, never up):

- `selection`: the K sweep, `select_k` and `SelectKResult`;
- `_cost`: what a fit will cost, said before it starts (`n_free_parameters`,
  `estimate_fit_cost` from measured per-row costs);
- `_gaussian_mixture`: the `GaussianMixture` estimator (parameters, fitted
  state, the EM loop, (de)serialising its state for model files);
- `_estimator`: scikit-learn's estimator protocol without scikit-learn
  (parameters by name, repr, tags, fitted state, training columns, pickling);
- `_init`: seeding and the first responsibilities;
- `_validation`: the allowed values and the one check of each
  (`check_n_components`, `check_covariance_type`, `check_criterion`, ...);
- `_em`: the EM numerical core, streamed E-step kernels and the M-step;
- `_parameters`: covariance shapes, precision Cholesky factors and the
  canonical component order, on small arrays.

The EM core knows no files: model files are written and read by
`gmmseg.io.model_file`, which the estimator calls only inside ``save`` and
``load``.
"""

from ._cost import FitCost, estimate_fit_cost, n_free_parameters
from ._em import EStepResult
from ._gaussian_mixture import GaussianMixture
from ._parameters import canonical_order
from ._validation import (
    COVARIANCE_TYPES,
    CRITERIA,
    INIT_METHODS,
    check_covariance_type,
    check_criterion,
    check_k_values,
    check_n_components,
)
from .selection import CLEAR_ENTROPY, SelectKResult, select_k

__all__ = [
    "CLEAR_ENTROPY",
    "COVARIANCE_TYPES",
    "CRITERIA",
    "INIT_METHODS",
    "EStepResult",
    "FitCost",
    "GaussianMixture",
    "SelectKResult",
    "canonical_order",
    "check_covariance_type",
    "check_criterion",
    "check_k_values",
    "check_n_components",
    "estimate_fit_cost",
    "n_free_parameters",
    "select_k",
]
