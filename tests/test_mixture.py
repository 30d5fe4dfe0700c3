"""Tests of gmmseg.mixture: agreement with scikit-learn, invariants, errors."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import sparse, special, stats
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gmmseg import ConvergenceWarning, GaussianMixture, ModelFileError
from gmmseg.errors import NotFittedError
from gmmseg.mixture import _em, canonical_order

COV_TYPES = ["full", "tied", "diag", "spherical"]


def blobs(n=3000, seed=0):
    """Three overlapping anisotropic 3-D blobs with known labels."""
    rng = np.random.default_rng(seed)
    sizes = [n // 2, n // 3, n - n // 2 - n // 3]
    parts = [
        rng.multivariate_normal([0, 0, 0], [[1, 0.5, 0], [0.5, 1, 0.2], [0, 0.2, 0.5]], sizes[0]),
        rng.multivariate_normal([3, 2, 0], [[0.5, 0, 0], [0, 2, -0.3], [0, -0.3, 1]], sizes[1]),
        rng.multivariate_normal([-2, 4, 2], np.diag([0.3, 0.3, 2.0]), sizes[2]),
    ]
    labels = np.repeat(np.arange(3), sizes)
    return np.concatenate(parts), labels


def initial_params(X, covariance_type, k=3):
    """A deliberately rough but valid starting point shared by both libraries."""
    rng = np.random.default_rng(1)
    means = X[rng.choice(len(X), k, replace=False)]
    d = X.shape[1]
    prec = {
        "full": np.tile(np.eye(d), (k, 1, 1)) * 0.5,
        "tied": np.eye(d) * 0.5,
        "diag": np.full((k, d), 0.5),
        "spherical": np.full(k, 0.5),
    }[covariance_type]
    return dict(weights_init=np.full(k, 1.0 / k), means_init=means, precisions_init=prec)


def run_both(X, covariance_type, dtype, max_iter=25):
    init = initial_params(X, covariance_type)
    common = dict(covariance_type=covariance_type, tol=0.0, max_iter=max_iter, **init)
    with pytest.warns(Warning, match="converge"):
        sk = SkGaussianMixture(3, **common).fit(X)
    with pytest.warns(ConvergenceWarning):
        gm = GaussianMixture(3, dtype=dtype, **common).fit(X)
    return sk, gm


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-5), ("float32", 1e-4)])
def test_matches_sklearn_from_same_start(covariance_type, dtype, rtol):
    X, _ = blobs()
    sk, gm = run_both(X, covariance_type, dtype)
    assert gm.n_iter_ == sk.n_iter_ == 25
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=rtol)
    np.testing.assert_allclose(gm.lower_bounds_, sk.lower_bounds_, rtol=rtol)
    assert np.mean(gm.predict(X) == sk.predict(X)) >= 0.999
    np.testing.assert_allclose(gm.score_samples(X), sk.score_samples(X), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gm.weights_, sk.weights_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gm.means_, sk.means_, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gm.covariances_, sk.covariances_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gm.precisions_, sk.precisions_, rtol=1e-3, atol=1e-3)
    assert gm.covariances_.shape == sk.covariances_.shape
    assert gm.precisions_cholesky_.shape == sk.precisions_cholesky_.shape
    np.testing.assert_allclose(gm.bic(X), sk.bic(X), rtol=1e-5)
    np.testing.assert_allclose(gm.aic(X), sk.aic(X), rtol=1e-5)


def test_converged_fit_matches_sklearn_iterations():
    X, _ = blobs()
    init = initial_params(X, "full")
    sk = SkGaussianMixture(3, tol=1e-3, **init).fit(X)
    gm = GaussianMixture(3, tol=1e-3, dtype="float64", **init).fit(X)
    assert sk.converged_ and gm.converged_
    assert gm.n_iter_ == sk.n_iter_
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_proba_rows_sum_to_one_and_argmax_is_predict(covariance_type):
    X, _ = blobs(900)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    proba = gm.predict_proba(X)
    assert proba.shape == (900, 3) and proba.dtype == np.float64  # float64 in, float64 out
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), gm.predict(X))
    res = gm.e_step(X)
    np.testing.assert_array_equal(res.labels, gm.predict(X))
    np.testing.assert_allclose(res.log_likelihood, gm.score_samples(X))


@pytest.mark.parametrize("init_params", ["k-means++", "kmeans", "random", "random_from_data"])
def test_fit_predict_equals_fit_then_predict(init_params):
    X, truth = blobs(1500)
    labels = GaussianMixture(3, init_params=init_params, random_state=3).fit_predict(X)
    gm = GaussianMixture(3, init_params=init_params, random_state=3).fit(X)
    np.testing.assert_array_equal(labels, gm.predict(X))
    assert adjusted_rand_score(truth, labels) > 0.8


def test_same_seed_same_model_and_n_init_keeps_best():
    X, _ = blobs(1500)
    a = GaussianMixture(3, random_state=7).fit(X)
    b = GaussianMixture(3, random_state=7).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    singles = [GaussianMixture(3, init_params="random", random_state=s, max_iter=5)
               for s in range(4)]
    best = GaussianMixture(3, init_params="random", n_init=4, random_state=0, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        best.fit(X)
        rng_runs = []
        # n_init draws its starts from one generator, so compare against the
        # lower bound of every start it tried: none may beat the one it kept.
        for model in singles:
            rng_runs.append(model.fit(X).lower_bound_)
    assert best.lower_bound_ >= min(rng_runs)
    assert np.isfinite(best.lower_bound_)


def test_weighted_unique_rows_equal_repeated_rows():
    rng = np.random.default_rng(0)
    unique = np.concatenate([rng.normal(0, 1, (40, 2)), rng.normal(5, 1, (40, 2))])
    counts = rng.integers(1, 6, size=len(unique))
    repeated = np.repeat(unique, counts, axis=0)
    init = dict(means_init=np.array([[0.0, 0.0], [5.0, 5.0]]), tol=1e-8, max_iter=500,
                dtype="float64")
    weighted = GaussianMixture(2, **init).fit(unique, sample_weight=counts)
    plain = GaussianMixture(2, **init).fit(repeated)
    np.testing.assert_allclose(weighted.lower_bound_, plain.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(weighted.means_, plain.means_, rtol=1e-8)
    np.testing.assert_allclose(weighted.covariances_, plain.covariances_, rtol=1e-8)
    np.testing.assert_allclose(weighted.weights_, plain.weights_, rtol=1e-8)


def test_zero_weight_rows_are_ignored():
    X, _ = blobs(600)
    outliers = np.full((50, 3), 1e3)
    w = np.r_[np.ones(len(X)), np.zeros(50)]
    init = dict(means_init=X[:3], dtype="float64", tol=1e-6)
    a = GaussianMixture(3, **init).fit(np.r_[X, outliers], sample_weight=w)
    b = GaussianMixture(3, **init).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-8)


def test_chunking_and_threads_do_not_change_the_result():
    X, _ = blobs(5000)
    init = initial_params(X, "full")
    kw = dict(dtype="float64", tol=1e-6, **init)
    one = GaussianMixture(3, chunk_size=100000, n_jobs=1, **kw).fit(X)
    many = GaussianMixture(3, chunk_size=256, n_jobs=2, **kw).fit(X)
    assert one.n_iter_ == many.n_iter_
    np.testing.assert_allclose(one.means_, many.means_, rtol=1e-10)
    np.testing.assert_allclose(
        one.predict_proba(X), many.predict_proba(X), rtol=1e-10, atol=1e-12)


def test_empty_component_is_reseeded_not_nan():
    X, _ = blobs(1200)
    means = np.array([[0.0, 0, 0], [3, 2, 0], [500.0, 500, 500]])
    gm = GaussianMixture(3, means_init=means, weights_init=[0.5, 0.4999999, 1e-7],
                         precisions_init=np.tile(np.eye(3) * 100.0, (3, 1, 1)),
                         random_state=0, max_iter=200)
    gm.fit(X)
    for arr in (gm.weights_, gm.means_, gm.covariances_):
        assert np.all(np.isfinite(arr))
    assert np.all(gm.weights_ > 0.05)  # the far component came back to the data
    assert np.abs(gm.means_).max() < 20


def test_singular_covariance_retries_with_larger_reg_covar():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 1))
    X = np.hstack([a, 2 * a, rng.normal(size=(500, 1))])  # rank-deficient
    gm = GaussianMixture(2, reg_covar=0.0, random_state=0, dtype="float64")
    with pytest.warns(RuntimeWarning, match="retrying with reg_covar"):
        gm.fit(X)
    assert gm.reg_covar_ > 0
    assert np.all(np.isfinite(gm.score_samples(X)))


def test_non_convergence_warns_and_reports():
    X, _ = blobs(600)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        gm = GaussianMixture(3, max_iter=2, tol=1e-12, random_state=0).fit(X)
    assert gm.converged_ is False and gm.n_iter_ == 2


@pytest.mark.parametrize(
    "X, match",
    [
        (np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 3.0]]), "NaN or infinity"),
        (np.array([[0.0, 1.0], [np.inf, 1.0], [2.0, 3.0]]), "NaN or infinity"),
        (np.zeros((0, 3)), "empty"),
        (np.arange(10.0), "2-D"),
        (np.zeros((4, 2, 2)), "2-D"),
        (np.array([[1.0, 1.0]] * 10 + [[2.0, 2.0]] * 10), "fewer than n_components=3 distinct"),
        (np.array([[1.0, 2.0]]), "n_components=3 must be <= n_samples=1"),
        (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), "numeric"),
        (np.array([["1.5", "2"], ["x", "3"], ["4", "5"]], dtype=object), "numbers only"),
        (sparse.csr_array(np.eye(4)), "sparse matrix, but GaussianMixture needs dense data"),
        (np.ones((5, 2)) + 1j, r"complex \(complex128\): Complex data not supported"),
        (np.zeros((6, 0)), r"0 feature\(s\) \(shape=\(6, 0\)\)"),
        (np.arange(10.0), r"Reshape your data: X.reshape\(-1, 1\)"),
    ],
)
def test_bad_input_is_a_clear_value_error(X, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(3, random_state=0).fit(X)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(n_components=0), "n_components"),
        (dict(covariance_type="banana"), "covariance_type"),
        (dict(init_params="nope"), "init_params"),
        (dict(reg_covar=-1.0), "reg_covar"),
        (dict(dtype="int8"), "dtype"),
        (dict(means_init=np.zeros((2, 3))), r"means_init must have shape \(3, 3\)"),
        (dict(weights_init=[0.5, 0.5, 0.5]), "sum to 1"),
        (dict(precisions_init=np.zeros((3, 3))), "precisions_init must have shape"),
    ],
)
def test_bad_parameters(params, match):
    X, _ = blobs(300)
    params = {"n_components": 3, **params}
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**params).fit(X)


def test_predict_checks_fitted_and_feature_count():
    X, _ = blobs(300)
    with pytest.raises(NotFittedError, match="not fitted"):
        GaussianMixture(2).predict(X)
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.predict(X[:, :2])


def test_sample_weight_validation():
    X, _ = blobs(300)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        GaussianMixture(2).fit(X, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        GaussianMixture(2).fit(X, sample_weight=-np.ones(300))


def test_input_is_not_modified():
    X, _ = blobs(300)
    X32 = X.astype(np.float32)
    before = X32.copy()
    GaussianMixture(3, random_state=0).fit(X32).predict_proba(X32)
    np.testing.assert_array_equal(X32, before)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_save_load_round_trip(tmp_path, covariance_type, suffix):
    X, _ = blobs(600)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    path = tmp_path / f"model{suffix}"
    gm.save(path, metadata={"features": "lab,position"})
    loaded = GaussianMixture.load(path)
    np.testing.assert_array_equal(loaded.predict(X), gm.predict(X))
    np.testing.assert_allclose(loaded.score_samples(X), gm.score_samples(X))
    assert loaded.metadata_ == {"features": "lab,position"}
    assert loaded.get_params()["covariance_type"] == covariance_type
    assert loaded.n_iter_ == gm.n_iter_ and loaded.converged_ == gm.converged_
    assert loaded.lower_bounds_ == gm.lower_bounds_
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_load_rejects_tampered_and_foreign_files(tmp_path):
    X, _ = blobs(300)
    gm = GaussianMixture(2, random_state=0).fit(X)
    good = tmp_path / "m.npz"
    gm.save(good)
    with np.load(good) as npz:
        content = dict(npz)
    content["means_"] = content["means_"] + 1.0
    tampered = tmp_path / "tampered.npz"
    np.savez(tampered, **content)
    with pytest.raises(ModelFileError, match="tampered.npz: checksum mismatch"):
        GaussianMixture.load(tampered)
    content["means_"] = content["means_"] - 1.0
    content["format_version"] = np.array(99)
    future = tmp_path / "future.npz"
    np.savez(future, **content)
    with pytest.raises(ModelFileError, match="version 99 is not supported"):
        GaussianMixture.load(future)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ModelFileError, match="garbage.npz: not a readable gmmseg model"):
        GaussianMixture.load(garbage)
    js = tmp_path / "m.json"
    gm.save(js)
    doc = json.loads(js.read_text())
    doc["arrays"]["weights_"][0] = 0.9
    js.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        GaussianMixture.load(js)
    with pytest.raises(ModelFileError, match="no such file"):
        GaussianMixture.load(tmp_path / "missing.npz")


def test_canonical_order_sorts_components_and_permutes_predictions():
    X, _ = blobs(900)
    gm = GaussianMixture(3, random_state=5).fit(X)
    before = gm.predict_proba(X)
    order = gm.sort_components()
    assert np.all(np.diff(gm.means_[:, 0]) >= 0)
    np.testing.assert_allclose(gm.predict_proba(X), before[:, order], atol=1e-6)
    np.testing.assert_array_equal(canonical_order(np.array([[1.0, 2.0], [1.0, 1.0], [0.0, 9.0]])),
                                  [2, 1, 0])


def test_sample_follows_the_mixture():
    X, _ = blobs(3000)
    gm = GaussianMixture(3, random_state=0).fit(X)
    S, y = gm.sample(20000)
    assert S.shape == (20000, 3) and y.shape == (20000,)
    np.testing.assert_allclose(np.bincount(y) / 20000, gm.weights_, atol=0.02)
    for k in range(3):
        np.testing.assert_allclose(S[y == k].mean(0), gm.means_[k], atol=0.1)
    S2, _ = gm.sample(20000)
    np.testing.assert_array_equal(S, S2)  # seeded by random_state


def test_get_set_params_and_warm_start():
    gm = GaussianMixture(3, covariance_type="diag")
    params = gm.get_params()
    assert params["n_components"] == 3 and params["covariance_type"] == "diag"
    gm.set_params(n_components=2, tol=1e-4)
    assert gm.n_components == 2 and gm.tol == 1e-4
    with pytest.raises(ValueError, match="invalid parameter 'bogus'"):
        gm.set_params(bogus=1)
    assert "n_components=2" in repr(gm)
    X, _ = blobs(600)
    gm = GaussianMixture(3, random_state=0, tol=1e-8, max_iter=1000).fit(X)
    gm.set_params(warm_start=True, max_iter=3, tol=1e-3)
    first = gm.means_.copy()
    gm.fit(X)
    np.testing.assert_allclose(gm.means_, first, atol=1e-4)  # already at the optimum
    assert gm.converged_ and gm.n_iter_ == 2  # the first iteration has nothing to compare with


def test_too_few_distinct_rows_has_its_own_error_class():
    from gmmseg.errors import TooFewDistinctRowsError

    X = np.array([[1.0, 1.0]] * 10 + [[2.0, 2.0]] * 10)
    with pytest.raises(TooFewDistinctRowsError, match="fewer than n_components=3 distinct"):
        GaussianMixture(3).fit(X)
    with pytest.raises(TooFewDistinctRowsError, match="must be <= n_samples"):
        GaussianMixture(3).fit(X[:2])


def test_object_arrays_of_numbers_are_read_and_other_objects_are_a_type_error():
    X, _ = blobs(300)
    a = GaussianMixture(3, random_state=0).fit(X)
    b = GaussianMixture(3, random_state=0).fit(X.astype(object))
    np.testing.assert_array_equal(a.means_, b.means_)
    bad = X.astype(object)
    bad[0, 0] = {"not": "a number"}
    with pytest.raises(TypeError, match="X must hold numbers only: float.. argument"):
        GaussianMixture(3).fit(bad)


@pytest.mark.parametrize("given, dtype, expected", [
    (np.float64, None, np.float64),      # scikit-learn's rule: float64 in, float64 out
    (np.float32, None, np.float32),      # the image pipeline's features stay float32
    (np.int64, None, np.float64),
    (np.float16, None, np.float64),
    (np.float64, "float32", np.float32),  # asked for
    (np.float32, "float64", np.float64),
])
def test_outputs_follow_the_input_dtype_unless_asked(given, dtype, expected):
    X, _ = blobs(300)
    X = (X * 10).astype(given)
    gm = GaussianMixture(3, dtype=dtype, random_state=0).fit(X)
    res = gm.e_step(X)
    for out in (gm.predict_proba(X), gm.score_samples(X), res.proba, res.log_likelihood,
                gm.component_log_prob(X)):
        assert out.dtype == expected
    assert res.labels.dtype == np.int32 and isinstance(gm.score(X), float)
    assert gm.means_.dtype == np.float64  # parameters are float64 whatever the compute


def test_float64_compute_is_float64_accurate():
    """Not float32 results cast up: the log densities agree with SciPy's to 1e-12."""
    X, _ = blobs(900)
    gm = GaussianMixture(3, random_state=0).fit(X)
    log_joint = np.stack([
        np.log(w) + stats.multivariate_normal(m, c).logpdf(X)
        for w, m, c in zip(gm.weights_, gm.means_, gm.covariances_)
    ], axis=1)
    np.testing.assert_allclose(gm.score_samples(X), special.logsumexp(log_joint, axis=1),
                               rtol=1e-12)
    np.testing.assert_allclose(gm.predict_proba(X), special.softmax(log_joint, axis=1),
                               rtol=1e-9, atol=1e-13)


def test_lower_bounds_trace_the_kept_run():
    X, _ = blobs(900)
    gm = GaussianMixture(3, init_params="random", n_init=3, init_trials=1, random_state=2,
                         tol=1e-6, max_iter=300).fit(X)
    assert len(gm.lower_bounds_) == gm.n_iter_ and gm.lower_bounds_[-1] == gm.lower_bound_
    assert all(isinstance(v, float) for v in gm.lower_bounds_)
    assert np.all(np.diff(gm.lower_bounds_) > -1e-9)  # EM never lowers the likelihood
    assert abs(gm.lower_bounds_[-1] - gm.lower_bounds_[-2]) < 1e-6 <= abs(
        gm.lower_bounds_[-2] - gm.lower_bounds_[-3])
    start_only = GaussianMixture(3, max_iter=0, random_state=0).fit(X)
    assert start_only.lower_bounds_ == [] and start_only.n_iter_ == 0


def test_a_fit_that_fails_leaves_an_unfitted_model(monkeypatch):
    X, _ = blobs(300)
    gm = GaussianMixture(3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="NaN or infinity"):
        gm.fit(np.full((10, 3), np.nan))  # refused before fitting: the old fit stays
    gm.predict(X)

    def fail(*args, **kwargs):
        raise ValueError("fitting the mixture failed")

    monkeypatch.setattr(GaussianMixture, "_em", fail)
    with pytest.raises(ValueError, match="fitting the mixture failed"):
        gm.fit(X[:, :2])
    with pytest.raises(NotFittedError):  # not the new data's initial means with the old width
        gm.predict(X[:, :2])


def separated_blobs(seed=0):
    """Four tight, far-apart 2-D blobs: most responsibilities are far below e^-60."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [40.0, 0.0], [0.0, 40.0], [40.0, 40.0]])
    return np.concatenate([rng.normal(c, 0.5, (500, 2)) for c in centres])


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_clamped_responsibilities_leave_the_statistics_unchanged(covariance_type):
    """One EM step where most log responsibilities are thousands below the row's best:
    the kernels clamp them at -60 before exp, and the M-step matches scikit-learn's
    float64 one (which lets them underflow to 0) to float64 accuracy."""
    X = separated_blobs()
    init = initial_params(X, covariance_type, k=4)
    common = dict(covariance_type=covariance_type, tol=0.0, max_iter=1, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGaussianMixture(4, **common).fit(X)
        gm = GaussianMixture(4, dtype="float64", **common).fit(X)
    np.testing.assert_allclose(gm.means_, sk.means_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gm.covariances_, sk.covariances_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gm.weights_, sk.weights_, rtol=1e-10)
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-12)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
def test_float32_responsibilities_have_no_subnormal_numbers(monkeypatch, compiled):
    """Products with subnormal floats run many times slower on some CPUs.

    Rows on a line between two tight components: their log responsibility
    ratios sweep through the range where exp gives float32 subnormals
    (about -88 to -103), which both kernels (compiled and NumPy) clamp away.
    """
    if compiled:
        pytest.importorskip("numba")
    monkeypatch.setattr(_em, "USE_COMPILED", compiled)
    x = np.linspace(-5.0, 15.0, 20000)
    X = np.stack([x, np.zeros_like(x)], axis=1).astype(np.float32)
    gm = GaussianMixture(2, max_iter=0, weights_init=[0.5, 0.5],
                         means_init=[[0.0, 0.0], [10.0, 0.0]],
                         precisions_init=np.full((2, 2), 4.0), covariance_type="diag").fit(X)
    proba = gm.predict_proba(X)
    assert proba.dtype == np.float32
    tiny = np.finfo(np.float32).tiny
    assert not np.any((proba != 0) & (np.abs(proba) < tiny))
    assert proba.min() < 1e-20  # far components keep a clamped, normal, tiny share
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), (x > 5).astype(int))


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_start_up_trials_on_threads_give_the_one_thread_result(covariance_type):
    """The "small EM" trials run side by side; each has its own generator, so the
    chosen start, and the fit, do not depend on the number of threads."""
    X, _ = blobs(30000)  # more rows than one trial's subsample
    kw = dict(covariance_type=covariance_type, random_state=3, dtype="float64")
    one = GaussianMixture(3, n_jobs=1, **kw).fit(X)
    two = GaussianMixture(3, n_jobs=2, **kw).fit(X)
    assert one.n_iter_ == two.n_iter_
    np.testing.assert_allclose(one.lower_bounds_, two.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(one.means_, two.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(one.covariances_, two.covariances_, rtol=1e-9, atol=1e-12)


def test_a_numba_that_fails_to_import_leaves_the_numpy_kernels(tmp_path):
    """An installed Numba can refuse to import (built for another NumPy): gmmseg
    says so once per kind of kernel and computes the same results with NumPy."""
    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('Numba needs NumPy 2.3 or less')\n")
    code = (
        "import warnings, numpy as np\n"
        "from gmmseg import GaussianMixture\n"
        "from gmmseg.postprocess import remove_small_regions\n"
        "X = np.concatenate([np.zeros((200, 2)), np.full((200, 2), 9.0)])\n"
        "X += np.random.default_rng(0).normal(size=X.shape)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    labels = GaussianMixture(2, random_state=0).fit_predict(X)\n"
        "    cleaned = remove_small_regions(np.array([[0, 0, 1], [0, 0, 0]]), 2)\n"
        "print(len(set(labels[:200].tolist())), len(set(labels[200:].tolist())),\n"
        "      cleaned.tolist())\n"
        "print(sum('compiled kernels are unavailable' in str(w.message) for w in caught))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("GMMSEG_KERNELS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    first, second = out.stdout.splitlines()
    assert first == "1 1 [[0, 0, 0], [0, 0, 0]]"
    assert second == "2"   # the EM kernels and the region code, once each
