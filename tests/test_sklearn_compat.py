"""GaussianMixture in scikit-learn's tools: the estimator checks, Pipeline, search, clone.

scikit-learn is a test dependency only; gmmseg itself never imports it (the
last test proves that in a fresh interpreter).
"""

import functools
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import estimator_checks_generator
from sklearn.utils.validation import check_is_fitted

from gmmseg import ConvergenceWarning, GaussianMixture
from gmmseg.errors import GmmsegError, NotFittedError
from gmmseg.mixture import _estimator

# ----- scikit-learn's estimator checks ---------------------------------------

# The configurations checked: the defaults (what check_estimator users run),
# every covariance type with several components, each initialisation, and
# float32 compute asked for on float64 data.
ESTIMATORS = [
    GaussianMixture(),
    GaussianMixture(3, covariance_type="full", n_init=2),
    GaussianMixture(3, covariance_type="tied", init_params="kmeans"),
    GaussianMixture(2, covariance_type="diag", init_params="random", init_trials=1),
    GaussianMixture(2, covariance_type="spherical", init_params="random_from_data"),
    GaussianMixture(2, dtype="float32"),
]

# Checks that fail, and will fail, by design.
EXPECTED_TO_FAIL = {
    "check_estimators_unfitted": (
        "it wants scikit-learn's own NotFittedError class, which gmmseg cannot raise "
        "without depending on scikit-learn; gmmseg raises gmmseg.errors.NotFittedError, "
        "a ValueError and AttributeError as scikit-learn's is (and check_is_fitted "
        "raises scikit-learn's, see test_fitted_state_in_both_libraries)"
    ),
}
# Checks that do not apply to some configurations.
RANDOM_START = (
    "fitting from a random start: repeated rows and weighted rows in another order "
    "draw other seeds, so they need not reach the same optimum; weighted EM is "
    "checked from a given start in test_mixture.py::test_weighted_unique_rows_equal_"
    "repeated_rows, and by this check with one component"
)


def _cannot_apply(estimator):
    if estimator.n_components > 1:
        return {"check_sample_weight_equivalence_on_dense_data": RANDOM_START}
    return {}


def _checks_of(estimator):
    """``(estimator, check)`` pairs; without the warning that it is no BaseEstimator.

    It is not, on purpose: gmmseg does not depend on scikit-learn.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Estimator GaussianMixture does not inherit from "
                                "`sklearn.base.BaseEstimator`", UserWarning)
        return list(estimator_checks_generator(estimator, legacy=True))


def _check_name(check):
    return check.func.__name__ if isinstance(check, functools.partial) else check.__name__


def _estimator_checks():
    for estimator in ESTIMATORS:
        skips = _cannot_apply(estimator)
        for est, check in _checks_of(estimator):
            name = _check_name(check)
            if name in EXPECTED_TO_FAIL:
                marks = pytest.mark.xfail(reason=EXPECTED_TO_FAIL[name], strict=True)
            elif name in skips:
                marks = pytest.mark.skip(reason=skips[name])
            else:
                marks = ()
            yield pytest.param(est, check, marks=marks, id=f"{est!r}-{name}")


@pytest.mark.parametrize("estimator, check", list(_estimator_checks()))
def test_sklearn_estimator_check(estimator, check):
    # Short fits on tiny random data do not always converge; that is not
    # what these checks are about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_every_configuration_runs_the_whole_suite():
    """The checks are really run: about fifty per configuration, none silently lost."""
    names = [_check_name(c) for _, c in _checks_of(GaussianMixture())]
    assert len(names) >= 45
    for name in ("check_estimators_pickle", "check_fit_idempotent", "check_n_features_in",
                 "check_methods_subset_invariance", "check_estimators_dtypes",
                 "check_dict_unchanged", "check_fit_check_is_fitted", "check_set_params",
                 "check_sample_weight_equivalence_on_dense_data", *EXPECTED_TO_FAIL):
        assert name in names


# ----- scikit-learn's tools ----------------------------------------------------

def blobs(n=600, seed=0):
    """Three separated 2-D blobs on very different scales, with their labels."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    labels = np.repeat(np.arange(3), n // 3)
    X = centres[labels] + rng.normal(size=(len(labels), 2))
    return X * [1.0, 1000.0], labels


def test_pipeline_with_scaler_fits_predicts_and_matches_fitting_the_scaled_data():
    X, truth = blobs()
    pipe = make_pipeline(StandardScaler(), GaussianMixture(3, random_state=0)).fit(X)
    labels = pipe.predict(X)
    assert labels.shape == (len(X),)
    assert adjusted_rand_score(truth, labels) > 0.95
    alone = GaussianMixture(3, random_state=0).fit(StandardScaler().fit_transform(X))
    np.testing.assert_array_equal(labels, alone.predict(StandardScaler().fit_transform(X)))
    proba = pipe.predict_proba(X)
    assert proba.dtype == np.float64 and proba.shape == (len(X), 3)
    assert pipe.score(X) == pytest.approx(alone.score(StandardScaler().fit_transform(X)))
    pipe.set_params(gaussianmixture__n_components=2)  # nested parameter names
    assert pipe[-1].n_components == 2
    assert "GaussianMixture" in pipe._repr_html_()  # scikit-learn draws the step


def test_grid_search_over_n_components_picks_the_true_k_by_held_out_likelihood():
    X, _ = blobs()
    X = StandardScaler().fit_transform(X)
    folds = KFold(3, shuffle=True, random_state=0)  # the rows are sorted by blob
    search = GridSearchCV(GaussianMixture(random_state=0), {"n_components": [1, 2, 3]}, cv=folds)
    search.fit(X)
    assert search.best_params_ == {"n_components": 3}
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] < scores[1] < scores[2]  # GaussianMixture.score: mean log density
    assert isinstance(search.best_estimator_, GaussianMixture)
    assert search.best_estimator_.n_components == 3
    check_is_fitted(search.best_estimator_)


def test_grid_search_through_a_pipeline_passes_sample_weight():
    X, _ = blobs(300)
    w = np.random.default_rng(1).integers(1, 4, len(X))
    pipe = make_pipeline(StandardScaler(), GaussianMixture(random_state=0))
    search = GridSearchCV(pipe, {"gaussianmixture__covariance_type": ["diag", "full"]},
                          cv=KFold(2, shuffle=True, random_state=0))
    search.fit(X, gaussianmixture__sample_weight=w)
    assert search.best_params_["gaussianmixture__covariance_type"] in ("diag", "full")
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_clone_gives_an_unfitted_copy_with_equal_parameters():
    means = np.zeros((2, 3))
    gm = GaussianMixture(2, covariance_type="diag", means_init=means, random_state=4)
    gm.fit(np.random.default_rng(0).normal(size=(50, 3)))
    twin = clone(gm)
    assert type(twin) is GaussianMixture and twin is not gm
    params, twin_params = gm.get_params(), twin.get_params()
    assert params.keys() == twin_params.keys()
    for name, value in params.items():
        np.testing.assert_array_equal(twin_params[name], value)
    assert twin.means_init is not means  # parameters are deep-copied
    assert not hasattr(twin, "means_") and not hasattr(twin, "n_features_in_")
    with pytest.raises(NotFittedError):
        twin.predict(np.zeros((2, 3)))


def test_pickle_round_trip_and_version_stamp(monkeypatch):
    X, _ = blobs(300)
    gm = GaussianMixture(3, random_state=0).fit(X)
    back = pickle.loads(pickle.dumps(gm))
    np.testing.assert_array_equal(back.predict_proba(X), gm.predict_proba(X))
    assert back.lower_bounds_ == gm.lower_bounds_
    assert "_gmmseg_version" not in vars(back)
    monkeypatch.setattr(_estimator, "__version__", "0.0.1")
    old = pickle.dumps(gm)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="pickled by gmmseg 0.0.1 and is unpickled by"):
        pickle.loads(old)


def test_tags_describe_a_density_estimator():
    tags = get_tags(GaussianMixture())
    assert tags.estimator_type == "density_estimator" == get_tags(SkGaussianMixture()).estimator_type
    assert tags.requires_fit and not tags.target_tags.required
    assert not tags.input_tags.sparse and not tags.input_tags.allow_nan
    assert tags.transformer_tags is None and tags.classifier_tags is None


def test_fitted_state_in_both_libraries():
    gm = GaussianMixture(2)
    with pytest.raises(SkNotFittedError):
        check_is_fitted(gm)
    with pytest.raises(NotFittedError, match="not fitted yet; call fit") as err:
        gm.score_samples(np.zeros((3, 2)))
    assert isinstance(err.value, (ValueError, AttributeError, GmmsegError))
    assert not hasattr(gm, "precisions_")  # a fitted-only property, AttributeError
    gm.fit(np.random.default_rng(0).normal(size=(40, 2)))
    check_is_fitted(gm)
    assert gm.precisions_.shape == (2, 2, 2)


# ----- gmmseg's side of the protocol ------------------------------------------

class _Wrapper(_estimator._Estimator):
    """An estimator holding an estimator, for nested parameter names."""

    def __init__(self, model=None, level=1):
        self.model = model
        self.level = level


def test_nested_get_and_set_params():
    wrapper = _Wrapper(GaussianMixture(2), level=3)
    params = wrapper.get_params()
    assert params["model__n_components"] == 2 and params["level"] == 3
    assert "model__n_components" not in wrapper.get_params(deep=False)
    wrapper.set_params(model__n_components=5, model__tol=0.5, level=4)
    assert wrapper.model.n_components == 5 and wrapper.model.tol == 0.5 and wrapper.level == 4
    with pytest.raises(ValueError, match="invalid parameter 'bogus' for _Wrapper"):
        wrapper.set_params(bogus=1)
    with pytest.raises(ValueError, match="'level__x' for _Wrapper: level is not an estimator"):
        wrapper.set_params(level__x=1)
    with pytest.raises(ValueError, match="invalid parameter 'nope' for GaussianMixture"):
        wrapper.set_params(model__nope=1)


def test_repr_lists_changed_parameters_only():
    assert repr(GaussianMixture()) == "GaussianMixture()"
    assert repr(GaussianMixture(3, covariance_type="diag", means_init=np.zeros((3, 2)))) == (
        "GaussianMixture(n_components=3, covariance_type='diag', means_init=array(3, 2))")


class _Frame:
    """The two things scikit-learn reads of a data frame: ``columns`` and the values."""

    def __init__(self, values, columns):
        self._values = np.asarray(values)
        self.columns = list(columns)

    def __array__(self, dtype=None, copy=None):
        return self._values if dtype is None else self._values.astype(dtype)


def test_feature_names_are_recorded_and_checked():
    X, _ = blobs(300)
    gm = GaussianMixture(3, random_state=0).fit(_Frame(X, ["a", "b"]))
    np.testing.assert_array_equal(gm.feature_names_in_, ["a", "b"])
    plain = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_array_equal(gm.predict(_Frame(X, ["a", "b"])), plain.predict(X))
    with pytest.raises(ValueError, match=r"feature names should match .* fitted on \['a', 'b'\]"):
        gm.predict(_Frame(X[:, ::-1], ["b", "a"]))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        gm.score(X)
    with pytest.raises(TypeError, match="column names must all be strings"):
        GaussianMixture(2).fit(_Frame(X, ["a", 1]))
    gm.fit(X)  # refitted on an array: the names are forgotten
    assert not hasattr(gm, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but GaussianMixture was fitted"):
        gm.predict(_Frame(X, ["a", "b"]))
    assert not hasattr(GaussianMixture(2).fit(_Frame(X, [0, 1])), "feature_names_in_")


def test_gmmseg_never_imports_sklearn():
    code = (
        "import sys, numpy as np, gmmseg\n"
        "X = np.random.default_rng(0).normal(size=(100, 2))\n"
        "gm = gmmseg.GaussianMixture(2, random_state=0).fit(X)\n"
        "gm.predict(X); gm.get_params(); gm.set_params(tol=1e-2); repr(gm)\n"
        "import pickle; pickle.loads(pickle.dumps(gm))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'sklearn'], 'sklearn'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
