"""Tests of model selection (select_k, -k auto), uncertainty and anomaly maps."""

import json
import sys

import numpy as np
import pytest
from scipy import ndimage

import gmmseg
from gmmseg import postprocess
from gmmseg.errors import ConvergenceWarning, GmmsegError, OutputExistsError
from gmmseg.mixture import GaussianMixture, select_k
from gmmseg.mixture.selection import _grown_starts
from gmmseg.pipeline import segment


def known_mixture(n_components, n_per_component=250, dim=2, seed=0, isotropic=False):
    """Rows drawn from K well-separated Gaussians with random full covariances.

    ``isotropic``: one shared ``I`` covariance instead, which every
    covariance type can represent.
    """
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(n_components) / max(n_components, 1)
    centres = 12.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if dim > 2:
        centres = np.hstack([centres, rng.normal(0, 1, (n_components, dim - 2))])
    parts = []
    for centre in centres:
        a = rng.normal(0, 0.6, (dim, dim))
        cov = np.eye(dim) if isotropic else a @ a.T + 0.3 * np.eye(dim)
        parts.append(rng.multivariate_normal(centre, cov, n_per_component))
    return np.concatenate(parts)


# ---------------------------------------------------------------------------
# select_k on arrays


@pytest.mark.parametrize("true_k", [1, 3, 6])
def test_bic_picks_the_true_number_of_components(true_k):
    X = known_mixture(true_k, seed=true_k)
    result = select_k(X, range(1, 9), random_state=0)
    assert result.n_components == true_k
    assert result.model.n_components == true_k
    bic = result.curve()["bic"]
    assert np.argmin(bic) == true_k - 1


def test_rows_criteria_and_summary_are_consistent():
    X = known_mixture(3, seed=1)
    result = select_k(X, [3, 1, 2, 2, 4], criterion="aic", random_state=0)
    assert [r["n_components"] for r in result.rows] == [1, 2, 3, 4]
    for row in result.rows:
        model = result.models[("full", row["n_components"])]
        n = len(X)
        log_lik = model.score(X) * n
        assert row["log_likelihood"] == pytest.approx(log_lik, rel=1e-5)
        assert row["bic"] == pytest.approx(model.bic(X), rel=1e-5)
        assert row["aic"] == pytest.approx(model.aic(X), rel=1e-5)
        assert row["n_parameters"] == model._n_parameters()
        assert row["start"] in ("fresh", "grown") and row["error"] is None
        assert row["seconds"] >= 0 and row["warnings"] == []
    best = min(result.rows, key=lambda r: r["aic"])
    assert result.n_components == best["n_components"] >= 3  # AIC may over-fit; BIC does not
    assert min(result.rows, key=lambda r: r["bic"])["n_components"] == 3
    summary = result.summary()
    assert summary["criterion"] == "aic" and summary["chosen"] == result.n_components
    assert summary["k_values"] == [1, 2, 3, 4] and summary["fit_samples"] == len(X)
    assert summary["bic"] == [r["bic"] for r in result.rows]
    json.dumps(summary)  # JSON-ready


def test_same_seed_same_result_and_the_model_is_an_ordinary_fitted_mixture():
    X = known_mixture(3, seed=2)
    a = select_k(X, range(1, 5), random_state=7)
    b = select_k(X, range(1, 5), random_state=7)
    assert [r["bic"] for r in a.rows] == [r["bic"] for r in b.rows]
    np.testing.assert_array_equal(a.model.means_, b.model.means_)
    params = a.model.get_params()
    assert params["means_init"] is None and params["n_components"] == 3
    np.testing.assert_array_equal(a.model.predict(X), b.model.predict(X))


def test_several_covariance_types_are_compared():
    X = known_mixture(3, seed=3)
    result = select_k(X, range(1, 5), covariance_types=("spherical", "full"), random_state=0)
    assert len(result.rows) == 8
    assert result.covariance_type == "full" and result.n_components == 3
    summary = result.summary()
    assert set(summary["curves"]) == {"spherical", "full"}
    assert result.models[("spherical", 2)].covariance_type == "spherical"


@pytest.mark.parametrize("ctype", ["tied", "diag", "spherical"])
def test_grown_starts_for_every_covariance_type(ctype):
    X = known_mixture(3, seed=4, isotropic=True)
    result = select_k(X, range(1, 5), covariance_types=ctype, random_state=0)
    assert result.n_components == 3
    assert all(r["error"] is None for r in result.rows)


def test_grown_start_puts_the_new_component_on_the_worst_explained_rows():
    rng = np.random.default_rng(0)
    big = np.concatenate([rng.normal(0, 1, (400, 2)), rng.normal(10, 1, (400, 2))])
    small = rng.normal([40, -40], 0.5, (20, 2))
    X = np.concatenate([big, small])
    two = GaussianMixture(2, random_state=0).fit(big)
    starts = _grown_starts(two, X.astype(np.float32), None, np.random.default_rng(0))
    assert len(starts) == 3
    weights, means, covariances = starts[0]
    assert weights.shape == (3,) and weights.sum() == pytest.approx(1.0)
    assert means.shape == (3, 2) and covariances.shape == (3, 2, 2)
    np.testing.assert_allclose(means[:2], two.means_)
    assert np.linalg.norm(means[2] - [40, -40]) < 5  # the new mean sits in the far cluster
    for _, m, _ in starts[1:]:
        assert np.linalg.norm(m[2] - [40, -40]) < 5  # drawn by deficit: almost surely there


def test_k_beyond_the_distinct_rows_is_recorded_not_raised():
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]), 50, axis=0)
    result = select_k(X, range(1, 6), random_state=0)
    errors = {r["n_components"]: r["error"] for r in result.rows}
    assert errors[1] is None and errors[3] is None
    assert "fewer than n_components=4 distinct rows" in errors[4]
    assert errors[5] is not None and result.rows[4]["bic"] is None
    assert result.n_components <= 3
    with pytest.raises(ValueError, match="no K in \\[4, 5\\] could be fitted"):
        select_k(X, [4, 5])


def test_convergence_warnings_are_recorded_per_row():
    X = known_mixture(3, seed=5)
    result = select_k(X, range(1, 5), max_iter=1, tol=0.0, random_state=0)  # no warning raised
    rows = [r for r in result.rows if not r["converged"]]
    assert rows
    assert all(any("ConvergenceWarning" in w for w in r["warnings"]) for r in rows)


def test_sample_weight_counts_like_repeated_rows():
    X = known_mixture(2, n_per_component=60, seed=6)
    counts = np.random.default_rng(0).integers(1, 4, len(X))
    weighted = select_k(X, range(1, 4), sample_weight=counts, random_state=0)
    repeated = select_k(np.repeat(X, counts, axis=0), range(1, 4), random_state=0)
    assert weighted.n_samples == counts.sum()
    assert weighted.n_components == repeated.n_components == 2
    np.testing.assert_allclose(weighted.curve()["bic"], repeated.curve()["bic"], rtol=1e-4)


@pytest.mark.parametrize("init_params", ["kmeans", "random", "random_from_data"])
def test_other_initialisations(init_params):
    X = known_mixture(3, seed=7)
    result = select_k(X, range(1, 5), init_params=init_params, n_init=2, random_state=0)
    assert result.n_components == 3
    assert result.model.get_params()["n_init"] == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k_values=[]), "non-empty"),
        (dict(k_values=[0, 1]), "integers >= 1"),
        (dict(k_values=None), "iterable"),
        (dict(criterion="mdl"), "criterion must be one of"),
        (dict(covariance_types=("wide",)), "covariance_types"),
        (dict(n_components=3), "sets n_components"),
        (dict(means_init=np.zeros((2, 2))), "sets means_init"),
        (dict(bogus=1), "invalid parameter 'bogus'"),
        (dict(tol=-1), "tol must be"),
    ],
)
def test_bad_arguments(kwargs, message):
    X = known_mixture(2, n_per_component=20)
    kwargs = {"k_values": [1, 2], **kwargs}
    with pytest.raises(ValueError, match=message):
        select_k(X, **kwargs)


# ---------------------------------------------------------------------------
# Images: gmmseg.select_k and segment(n_components="auto")


def three_levels(size=40, noise=0.04, seed=0):
    img = np.zeros((size, size), np.float32)
    img[:, size // 3:] = 0.5
    img[:, 2 * size // 3:] = 1.0
    return img + np.random.default_rng(seed).normal(0, noise, img.shape).astype(np.float32)


def test_image_select_k_matches_segment_auto():
    img = three_levels()
    result = gmmseg.select_k(img, 1, 6, random_state=3)
    assert result.n_components == 3
    assert result.features is not None and result.info["fit_samples"] == img.size
    assert np.all(np.diff(result.model.means_[:, 0]) >= 0)  # canonical order
    seg = segment(img, range(1, 7), random_state=3)
    chosen = seg.info["model_selection"]
    assert chosen["chosen"] == 3 and seg.n_components == 3
    assert chosen["bic"] == result.curve()["bic"]
    np.testing.assert_allclose(seg.model.means_, result.model.means_)


def test_segment_auto_records_the_curve_in_the_report(tmp_path):
    img = three_levels()
    seg = segment(img, "auto", criterion="aic", random_state=0)
    assert seg.n_components == 3 and seg.labels.max() == 2
    selection = seg.info["model_selection"]
    assert selection["criterion"] == "aic" and selection["k_values"] == list(range(1, 11))
    paths = seg.save(tmp_path, "levels")
    report = json.loads(paths["report"].read_text())
    assert report["model_selection"]["chosen"] == 3
    assert len(report["model_selection"]["aic"]) == 10
    assert "model_selection" not in segment(img, 3).report()


def test_segment_auto_with_smoothing_and_few_distinct_pixels():
    img = three_levels()
    seg = segment(img, "auto", smoothing=1.0, random_state=0)
    assert seg.n_components == 3 and seg.info["model_selection"]["chosen"] == 3
    flat = np.zeros((10, 10), np.float32)
    flat[5:] = 1.0
    seg = segment(flat, "auto")  # K > 2 cannot be fitted: recorded, 2 chosen
    assert seg.n_components == 2
    assert seg.info["model_selection"]["bic"][5] is None


def test_segment_auto_reemits_the_chosen_fits_warnings():
    with pytest.warns(ConvergenceWarning):
        segment(three_levels(), [3], max_iter=1, tol=0.0)


def test_bad_n_components_and_k_range():
    img = three_levels(size=10)
    with pytest.raises(ValueError, match="'auto'"):
        segment(img, "many")
    with pytest.raises(ValueError, match="integers >= 1"):
        segment(img, [0, 2])
    with pytest.raises(ValueError, match="k_max must be >= k_min"):
        gmmseg.select_k(img, 5, 2)
    with pytest.raises(GmmsegError, match="no valid pixels"):
        gmmseg.select_k(np.full((4, 4), np.nan, np.float32))


# ---------------------------------------------------------------------------
# Uncertainty


def test_uncertainty_is_highest_on_the_boundaries_of_a_blurred_image():
    truth = np.zeros((48, 48), np.int32)
    truth[:24, 24:] = 1
    truth[24:, 24:] = 2
    colours = np.array([[200, 30, 30], [30, 180, 60], [30, 60, 200]], np.float64)
    img = ndimage.gaussian_filter(colours[truth], (2.0, 2.0, 0))
    img += np.random.default_rng(0).normal(0, 2.0, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    seg = segment(img, 3, random_state=0)
    u = seg.uncertainty
    assert u.dtype == np.float32 and u.shape == truth.shape
    assert 0.0 <= u.min() and u.max() <= 1.0
    edges = postprocess.boundaries(truth, mode="thick")
    near = ndimage.binary_dilation(edges, iterations=2)
    far = ~ndimage.binary_dilation(edges, iterations=6)
    assert u[near].mean() > 10 * u[far].mean()


def test_uncertainty_peaks_across_a_blurred_edge():
    img = np.zeros((32, 48), np.float32)
    img[:, 24:] = 1.0
    img = ndimage.gaussian_filter(img, 3.0)
    img += np.random.default_rng(0).normal(0, 0.15, img.shape).astype(np.float32)
    column_mean = segment(img, 2, random_state=0).uncertainty.mean(axis=0)
    assert int(np.argmax(column_mean)) in (23, 24)
    assert column_mean[22:26].mean() > 20 * np.r_[column_mean[:12], column_mean[36:]].mean()


def test_uncertainty_is_nan_where_invalid_and_zero_for_one_component():
    img = three_levels(size=20)
    img[0, :5] = np.nan
    seg = segment(img, 2, random_state=0)
    assert np.isnan(seg.uncertainty[0, :5]).all()
    assert np.isfinite(seg.uncertainty[1:]).all()
    one = segment(img, 1)
    assert np.all(one.uncertainty[1:] == 0)


def test_normalized_entropy_values():
    proba = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]], np.float32)
    h = postprocess.normalized_entropy(proba)
    np.testing.assert_allclose(h, [0.0, 1.0, np.log(2) / np.log(3)], atol=1e-6)
    assert postprocess.normalized_entropy(np.ones((2, 2, 1), np.float32)).tolist() == [[0, 0]] * 2
    with pytest.raises(TypeError, match="float"):
        postprocess.normalized_entropy(np.ones((2, 2), np.int32))


# ---------------------------------------------------------------------------
# Anomalies


def flat_regions_with_intruders(seed=0):
    """Three flat colour regions (slight noise) and six pixels of a fourth colour."""
    rng = np.random.default_rng(seed)
    img = np.zeros((60, 60, 3), np.float64)
    img[:, :20] = [200, 40, 40]
    img[:, 20:40] = [40, 180, 60]
    img[:, 40:] = [40, 60, 200]
    img += rng.normal(0, 3, img.shape)
    intruders = [(5, 5), (12, 33), (30, 50), (44, 8), (52, 27), (57, 57)]
    for y, x in intruders:
        img[y, x] = [240, 230, 20]
    return np.clip(img, 0, 255).astype(np.uint8), intruders


def test_anomaly_mask_finds_the_pixels_of_a_fourth_colour():
    img, intruders = flat_regions_with_intruders()
    seg = segment(img, 3, random_state=0)
    sixth_lowest = np.sort(seg.log_likelihood, axis=None)[len(intruders) - 1]
    lowest = np.argwhere(seg.log_likelihood <= sixth_lowest)
    assert sorted(map(tuple, lowest.tolist())) == sorted(intruders)
    mask = seg.anomaly_mask(0.003)  # 0.3% of 3600 pixels: at most 10
    assert mask.dtype == bool and mask.shape == img.shape[:2]
    assert all(mask[y, x] for y, x in intruders)
    assert np.count_nonzero(mask) <= len(intruders) + 5
    limit = seg.anomaly_threshold(0.003)
    np.testing.assert_array_equal(seg.anomaly_mask(threshold=limit), mask)


def test_anomaly_mask_is_false_where_invalid_and_checks_its_arguments():
    img = three_levels(size=20)
    img[:2] = np.nan
    seg = segment(img, 3, random_state=0)
    assert not seg.anomaly_mask(0.5)[:2].any()
    assert seg.anomaly_mask(threshold=1e30)[2:].all()
    for args, kwargs in [((), {}), ((0.1,), {"threshold": -3.0}), ((0.0,), {}), ((1.5,), {}),
                         ((True,), {}), ((), {"threshold": np.nan})]:
        with pytest.raises(ValueError, match="quantile|threshold"):
            seg.anomaly_mask(*args, **kwargs)


def test_save_writes_uncertainty_and_anomaly_maps(tmp_path):
    img, intruders = flat_regions_with_intruders()
    seg = segment(img, 3, random_state=0)
    paths = seg.save(tmp_path, "scene", uncertainty=True, anomaly=True, anomaly_quantile=0.003)
    assert paths == seg.output_paths(tmp_path, "scene", uncertainty=True, anomaly=True,
                                     anomaly_mask=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["scene_labels.png", "scene_overlay.png", "scene_report.json", "scene_loglik.tif",
         "scene_uncertainty.png", "scene_uncertainty.tif", "scene_anomaly.png",
         "scene_anomaly_mask.png", "scene_regions.png", "scene_regions_overlay.png"])
    mask = gmmseg.read_image(paths["anomaly_mask"]).data[..., 0]
    assert set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, seg.anomaly_mask(0.003))
    heat = gmmseg.read_image(paths["anomaly"]).data
    # The heat map at the top, centred over its colour bar (a canvas at least 360 px wide).
    assert heat.shape[0] > img.shape[0] and heat.shape[1] == 360 and heat.dtype == np.uint8
    left = (heat.shape[1] - img.shape[1]) // 2
    heat = heat[:img.shape[0], left:left + img.shape[1]]
    np.testing.assert_array_equal(heat, gmmseg.postprocess.heat_map(
        -seg.log_likelihood, seg.valid, percentiles=(1, 99.5)))
    y, x = intruders[0]
    assert heat[y, x].astype(int).sum() > heat[30, 10].astype(int).sum()  # bright = unusual
    raw = gmmseg.read_image(paths["uncertainty_map"]).data[..., 0]
    np.testing.assert_allclose(raw, seg.uncertainty)
    report = json.loads(paths["report"].read_text())
    anomaly = report["anomaly"]
    assert anomaly["quantile"] == 0.003 and anomaly["threshold"] is None
    assert anomaly["pixels"] == np.count_nonzero(seg.anomaly_mask(0.003))
    assert anomaly["share"] == pytest.approx(anomaly["pixels"] / img[..., 0].size)
    assert anomaly["log_likelihood_threshold"] == pytest.approx(seg.anomaly_threshold(0.003))
    assert 0 <= report["uncertainty"]["mean"] <= 1


def test_save_refuses_to_overwrite_and_validates_before_writing(tmp_path):
    seg = segment(three_levels(size=20), 3, random_state=0)
    (tmp_path / "a_anomaly_mask.png").write_bytes(b"keep")
    with pytest.raises(OutputExistsError, match="a_anomaly_mask.png"):
        seg.save(tmp_path, "a", anomaly_threshold=-5.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_anomaly_mask.png"]
    with pytest.raises(ValueError, match="exactly one"):
        seg.save(tmp_path / "b", "b", anomaly_quantile=0.1, anomaly_threshold=1.0)
    assert not (tmp_path / "b").exists()
    paths = seg.save(tmp_path, "a", anomaly_threshold=-5.0, overwrite=True)
    assert json.loads(paths["report"].read_text())["anomaly"]["threshold"] == -5.0


# ---------------------------------------------------------------------------
# Display helpers and the plot


def test_colormap_and_heat_map():
    for name in ("magma", "viridis", "gray"):
        table = postprocess.colormap(name)
        assert table.shape == (256, 3) and table.dtype == np.uint8
        brightness = table.astype(int) @ [299, 587, 114]
        assert brightness[-1] > brightness[128] > brightness[0]
    with pytest.raises(ValueError, match="name must be one of"):
        postprocess.colormap("jet")
    values = np.array([[0.0, 0.5, 1.0, np.nan]])
    valid = np.array([[True, True, False, True]])
    out = postprocess.heat_map(values, valid, value_range=(0, 1), cmap="gray")
    assert out[..., 0].tolist() == [[0, 128, 0, 0]]
    out = postprocess.heat_map(np.arange(100.0).reshape(10, 10))  # percentile stretch
    assert out[0, 0].tolist() == postprocess.colormap("magma")[0].tolist()
    with pytest.raises(ValueError, match="value_range"):
        postprocess.heat_map(values, value_range=(1, 1))


def test_plot_selection(tmp_path):
    pytest.importorskip("matplotlib")
    result = gmmseg.select_k(three_levels(size=20), 1, 4, covariance_types=("full", "diag"))
    path = tmp_path / "bic.png"
    fig = gmmseg.plot_selection(result, path)
    assert len(fig.axes) == 2
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        gmmseg.plot_selection(result, path)
    with pytest.raises(ValueError, match="unsupported plot format"):
        gmmseg.plot_selection(result, tmp_path / "bic.xyz")


def test_plot_selection_without_matplotlib(monkeypatch):
    result = gmmseg.select_k(three_levels(size=10), 1, 2)
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'gmmseg\[plot\]'"):
        gmmseg.plot_selection(result)
