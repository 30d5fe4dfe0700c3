"""The compiled EM kernels (Numba, the ``fast`` extra) against the NumPy kernels.

Every other test of the mixture runs whichever kernels are installed (the
compiled ones in CI); these run both on the same inputs and compare them.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from gmmseg import GaussianMixture
from gmmseg.mixture import _em

numba = pytest.importorskip("numba")
kernels = _em._compiled()

COV_TYPES = ["full", "tied", "diag", "spherical"]


def fitted_model(covariance_type, dtype, seed=0):
    """A three-component model of 4-D data, and 5,000 rows that are not a multiple
    of the kernels' block: full blocks, a partial block and two thread blocks."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (3, 4))
    X = np.concatenate([rng.normal(c, rng.uniform(0.3, 2.0, 4), (n, 4))
                        for c, n in zip(centres, (2500, 1700, 801))]).astype(dtype)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=seed,
                         dtype=dtype).fit(X)
    return gm, X


def both_kernels(monkeypatch, run):
    """``run()`` with the compiled kernels, then with the NumPy ones."""
    monkeypatch.setattr(_em, "USE_COMPILED", True)
    compiled = run()
    monkeypatch.setattr(_em, "USE_COMPILED", False)
    return compiled, run()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_compiled_statistics_equal_the_numpy_kernels(monkeypatch, covariance_type, dtype,
                                                     rtol, weighted):
    gm, X = fitted_model(covariance_type, dtype)
    w = np.random.default_rng(1).uniform(0, 2, len(X)) if weighted else None

    def run():
        with gm._runner(X) as runner:
            return gm._run_stats(X, w, runner, gm._state(X.dtype))

    compiled, numpy_ = both_kernels(monkeypatch, run)
    np.testing.assert_allclose(compiled.log_lik, numpy_.log_lik, rtol=rtol)
    # At a fitted model sum r y is near 0 (a sum of terms of order one that
    # cancel): compare each statistic on the scale of the total weight.
    scale = numpy_.nk.sum()
    for a, b in zip(compiled[1:], numpy_[1:]):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_compiled_e_step_equals_the_numpy_kernels(monkeypatch, covariance_type, dtype):
    gm, X = fitted_model(covariance_type, dtype)
    X = X[::-1]  # rows in another order than the fit's
    compiled, numpy_ = both_kernels(monkeypatch, lambda: gm.e_step(X))
    tol = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_array_equal(compiled.labels, numpy_.labels)
    np.testing.assert_allclose(compiled.proba, numpy_.proba, rtol=tol, atol=tol)
    np.testing.assert_allclose(compiled.log_likelihood, numpy_.log_likelihood, rtol=tol)
    assert compiled.proba.dtype == compiled.log_likelihood.dtype == np.dtype(dtype)
    # Outputs not asked for are not computed.
    only_labels, _ = both_kernels(
        monkeypatch, lambda: gm.e_step(X, proba=False, log_likelihood=False))
    assert only_labels.proba is None and only_labels.log_likelihood is None
    np.testing.assert_array_equal(only_labels.labels, numpy_.labels)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_a_whole_fit_is_the_same_with_either_kernels(monkeypatch, covariance_type):
    _, X = fitted_model(covariance_type, "float64", seed=2)

    def run():
        return GaussianMixture(3, covariance_type=covariance_type, random_state=0,
                               dtype="float64").fit(X)

    compiled, numpy_ = both_kernels(monkeypatch, run)
    # Start-up trials that reach one optimum with the components in another
    # order tie to rounding, so either may be kept: compare in one order.
    compiled.sort_components()
    numpy_.sort_components()
    assert compiled.n_iter_ == numpy_.n_iter_
    np.testing.assert_allclose(compiled.lower_bounds_, numpy_.lower_bounds_, rtol=1e-11)
    np.testing.assert_allclose(compiled.means_, numpy_.means_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(compiled.covariances_, numpy_.covariances_,
                               rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 3e-7), (np.float64, 3e-15)])
def test_exp_and_log_polynomials_are_accurate_to_the_dtype(dtype, rtol):
    """The kernels' own exp (on the clamped range) and log (of row totals >= 1)."""

    @numba.njit
    def exp_log(v, t):
        e = np.empty_like(v)
        lg = np.empty_like(t)
        for i in range(v.shape[0]):
            e[i] = kernels._exp_clamped(v[i])
            lg[i] = kernels._log_ge1(t[i])
        return e, lg

    v = np.linspace(-60.0, 0.0, 200_001).astype(dtype)
    t = np.geomspace(1.0, 64.0, 200_001).astype(dtype)
    e, lg = exp_log(v, t)
    assert e.dtype == lg.dtype == dtype
    np.testing.assert_allclose(e, np.exp(v.astype(np.float64)), rtol=rtol, atol=0)
    np.testing.assert_allclose(lg, np.log(t.astype(np.float64)), rtol=0,
                               atol=rtol * np.log(64.0))
    assert e[-1] == 1.0 and lg[0] == 0.0


def test_gmmseg_kernels_numpy_selects_the_numpy_kernels():
    code = "from gmmseg.mixture import _em; print(_em.USE_COMPILED)"
    env = dict(os.environ, GMMSEG_KERNELS="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"
    env.pop("GMMSEG_KERNELS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "True"


def trial_jobs(params, x, n=6, starts=None):
    from gmmseg.mixture._gaussian_mixture import _trial_generators

    rngs = _trial_generators(np.random.default_rng(5), n)
    return [(params, x, None, rng, None if starts is None else starts[i], {})
            for i, rng in enumerate(rngs)]


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_start_up_trials_side_by_side_equal_trials_alone(monkeypatch, covariance_type):
    """All trials in one pass per iteration give each trial's own result: the
    same lower bounds (to float32 rounding), states and winner, whatever the
    number of threads."""
    from gmmseg.mixture import _gaussian_mixture as gmm

    _, X = fitted_model(covariance_type, "float32", seed=3)
    params = GaussianMixture(3, covariance_type=covariance_type).get_params()
    alone = gmm._map_trials(gmm._failure_or_short_em, trial_jobs(params, X), 1)
    together = gmm._short_ems(trial_jobs(params, X), 2)
    one_thread = gmm._short_ems(trial_jobs(params, X), 1)
    for (lb_a, state_a), (lb_t, state_t), (lb_1, state_1) in zip(alone, together, one_thread):
        np.testing.assert_allclose(lb_t, lb_a, rtol=1e-5)
        np.testing.assert_allclose(state_t["means_"], state_a["means_"], rtol=1e-3, atol=1e-3)
        assert lb_1 == lb_t
        np.testing.assert_array_equal(state_1["means_"], state_t["means_"])
    best = [max(range(len(r)), key=lambda i: (r[i][0], -i)) for r in (alone, together)]
    assert best[0] == best[1]
    # Without the compiled kernels the trials run alone: the same results.
    monkeypatch.setattr(_em, "USE_COMPILED", False)
    numpy_ = gmm._short_ems(trial_jobs(params, X), 2)
    np.testing.assert_allclose([r[0] for r in numpy_], [r[0] for r in alone], rtol=1e-5)


def test_a_trial_that_needs_more_than_the_plain_update_goes_on_alone():
    """A start with a component far from every row empties it at once; that trial
    re-seeds it alone (as a trial alone would), the others go on together, and a
    start that cannot be set is reported in its place."""
    from gmmseg.mixture import _gaussian_mixture as gmm

    _, X = fitted_model("full", "float64", seed=4)
    params = GaussianMixture(3).get_params()
    centres = [X[:100].mean(0), X[2600:2700].mean(0), X[-100:].mean(0)]
    good = (np.full(3, 1 / 3), np.array(centres), np.array([np.eye(4)] * 3))
    far = (np.full(3, 1 / 3), np.array(centres[:2] + [np.full(4, 1e4)]),
           np.array([np.eye(4)] * 3))
    broken = (np.full(3, 1 / 3), np.array(centres), np.array([-np.eye(4)] * 3))
    starts = [good, far, broken, good]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the broken start's retries
        alone = gmm._map_trials(gmm._failure_or_short_em, trial_jobs(params, X, 4, starts), 1)
        together = gmm._short_ems(trial_jobs(params, X, 4, starts), 2)
    assert isinstance(alone[2], ValueError) and isinstance(together[2], ValueError)
    for i in (0, 1, 3):
        np.testing.assert_allclose(together[i][0], alone[i][0], rtol=1e-10)
        np.testing.assert_allclose(together[i][1]["means_"], alone[i][1]["means_"],
                                   rtol=1e-7, atol=1e-7)
    assert not np.allclose(together[1][1]["means_"][2], 1e4)  # re-seeded on the data


def test_trials_with_their_own_reg_covar_step_together():
    """A start that needed a larger reg_covar keeps it, and still steps with the others."""
    import copy
    from concurrent.futures import ThreadPoolExecutor

    from gmmseg.mixture import _gaussian_mixture as gmm

    _, X = fitted_model("full", "float64", seed=3)
    params = GaussianMixture(3).get_params()
    models = [gmm._trial_model(*job) for job in trial_jobs(params, X, 3)]
    models[0].reg_covar_ = 1e-2
    alone = [copy.deepcopy(m) for m in models]
    with ThreadPoolExecutor(1) as pool:
        step = gmm._side_by_side_step(models, X, None, [slice(0, len(X))], pool, False,
                                      float(len(X)))
    for (lower_bound, update), model in zip(step, alone):
        assert update is not None
        expected, _, _ = model._em(X, None, max_iter=1)
        np.testing.assert_allclose(lower_bound, expected, rtol=1e-12)
        np.testing.assert_allclose(update[2], model.covariances_, rtol=1e-10, atol=1e-12)
