"""Tests of the Potts prior (gmmseg.mrf) and smoothing in the pipeline."""

import copy
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import gmmseg
from gmmseg.io import Image
from gmmseg.mrf import PottsField, hmrf_em, neighbourhood


def noisy_regions(noise=0.6, seed=0, size=96):
    """Three regions (two halves and a centre square) under heavy noise."""
    truth = np.zeros((size, size), np.int32)
    truth[:, size // 2:] = 1
    truth[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 2
    rng = np.random.default_rng(seed)
    img = np.array([0.0, 1.0, 2.0])[truth] + rng.normal(0, noise, truth.shape)
    return img.astype(np.float32), truth


def ellipsoid_phantom(shape=(24, 48, 48), noise=0.6, seed=0):
    """Nested ellipsoids (three tissue classes) with noise, 2 mm slices."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    truth = np.zeros(shape, np.int32)
    truth[(x / 0.9) ** 2 + (y / 0.8) ** 2 + (z / 0.9) ** 2 < 1] = 1
    truth[(x / 0.45) ** 2 + (y / 0.4) ** 2 + (z / 0.5) ** 2 < 1] = 2
    rng = np.random.default_rng(seed)
    data = np.array([0.0, 1.0, 2.0])[truth] + rng.normal(0, noise, shape)
    image = Image(data[..., None].astype(np.float32), np.ones(shape, bool),
                  spacing=(2.0, 1.0, 1.0), channels=("gray",))
    return image, truth


def ari(truth, labels):
    return adjusted_rand_score(truth.ravel(), labels.ravel())


@pytest.mark.parametrize("make", [noisy_regions, ellipsoid_phantom], ids=["2-D", "3-D"])
def test_smoothing_rescues_noisy_data(make):
    img, truth = make()
    plain = gmmseg.segment(img, 3, random_state=0)
    smooth = gmmseg.segment(img, 3, random_state=0, smoothing=1.0)
    assert ari(truth, plain.labels) < 0.6
    assert ari(truth, smooth.labels) > 0.9
    assert smooth.labels.shape == truth.shape
    np.testing.assert_allclose(smooth.proba.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(smooth.proba.argmax(-1), smooth.labels)
    assert np.all(np.diff(smooth.model.means_[:, 0]) >= 0)  # still canonical order


@pytest.mark.parametrize("connectivity", [4, 8])
def test_free_energy_never_decreases(connectivity):
    img, _ = noisy_regions(seed=1)
    seg = gmmseg.segment(img, 3, random_state=0)
    X = seg.features.transform(seg.image)
    _, energies = hmrf_em(copy.deepcopy(seg.model), X, np.ones(img.shape, bool), 1.0,
                          connectivity=connectivity, tol=0.0, max_iter=8)
    assert len(energies) == 10
    assert np.all(np.diff(energies) >= -1e-6 * np.abs(energies[:-1]))
    assert energies[-1] > energies[0]


def test_every_half_sweep_is_an_ascent_step_in_3d():
    rng = np.random.default_rng(0)
    log_prob = rng.normal(0, 1, (3, 6, 7, 8)).astype(np.float64)
    valid = rng.random((6, 7, 8)) > 0.1
    field = PottsField(log_prob, valid, 0.8, spacing=(3.0, 1.0, 1.0))
    energies = [field.energy()]
    for _ in range(5):
        field.sweep(1)
        energies.append(field.energy())
    assert np.all(np.diff(energies) >= -1e-12)
    assert np.all(field.q[:, ~valid] == 0)


def test_beta_zero_is_the_plain_mixture_exactly():
    img, _ = noisy_regions()
    plain = gmmseg.segment(img, 3, random_state=0)
    zero = gmmseg.segment(img, 3, random_state=0, smoothing=0.0)
    np.testing.assert_array_equal(plain.labels, zero.labels)
    np.testing.assert_array_equal(plain.proba, zero.proba)
    # Without a prior, the field is the per-pixel posterior of the class
    # likelihoods (the prior, not the mixing weights, carries class sizes).
    X = plain.features.transform(plain.image)
    model = plain.model
    q, _ = hmrf_em(copy.deepcopy(model), X, np.ones(img.shape, bool), 0.0)
    log_lik = model.component_log_prob(X) - np.log(model.weights_)[:, None]
    expected = np.exp(log_lik - log_lik.max(0))
    expected /= expected.sum(0)
    np.testing.assert_allclose(q.reshape(3, -1), expected, rtol=1e-5, atol=1e-6)


def test_invalid_pixels_stay_invalid_and_do_not_vote():
    img, truth = noisy_regions()
    mask = np.ones(img.shape, bool)
    mask[40:56, :] = False
    a = gmmseg.segment(img, 3, mask=mask, smoothing=1.0)
    assert np.all(a.labels[~mask] == -1) and np.all(a.labels[mask] >= 0)
    assert np.all(a.proba[~mask] == 0)
    # Whatever lies under the invalid pixels cannot change the result.
    other = img.copy()
    other[~mask] = 1000.0
    b = gmmseg.segment(other, 3, mask=mask, smoothing=1.0)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert ari(truth[mask], a.labels[mask]) > 0.9


def test_pretrained_model_keeps_its_parameters_and_label_meaning():
    img, truth = noisy_regions()
    fitted = gmmseg.segment(img, 3, smoothing=1.0)
    model = copy.deepcopy(fitted.model)
    other, other_truth = noisy_regions(seed=7)
    applied = gmmseg.segment(other, model=model, feature_extractor=fitted.features,
                             smoothing=1.0)
    np.testing.assert_array_equal(model.means_, fitted.model.means_)
    assert np.mean(applied.labels == other_truth) > 0.95  # same label numbers, same classes


def test_same_seed_same_smoothed_labels():
    img, _ = noisy_regions()
    a = gmmseg.segment(img, 3, random_state=4, smoothing=1.0)
    b = gmmseg.segment(img, 3, random_state=4, smoothing=1.0)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_neighbourhood_weights_follow_spacing():
    offsets, weights = neighbourhood(3, 6, spacing=(3.0, 1.0, 1.0))
    assert len(offsets) == 6
    by_offset = {tuple(o): w for o, w in zip(offsets, weights)}
    assert by_offset[(0, 0, 1)] == 1.0 and by_offset[(1, 0, 0)] == pytest.approx(1 / 3)
    offsets, weights = neighbourhood(2, 8)
    assert len(offsets) == 8
    assert sorted(set(np.round(weights, 6))) == [pytest.approx(1 / np.sqrt(2)), 1.0]
    assert len(neighbourhood(3)[0]) == 26
    with pytest.raises(ValueError, match="connectivity must be one of"):
        neighbourhood(2, 6)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        neighbourhood(4)
    with pytest.raises(ValueError, match="beta"):
        PottsField(np.zeros((2, 3, 3)), np.ones((3, 3), bool), -1.0)


def test_smoothing_removes_speckle_on_nuclei():
    from scipy import ndimage

    samples = Path(__file__).resolve().parents[1] / "sample_images"
    image = gmmseg.read_image(samples / "nuclei.tif")

    def specks(labels):
        regions, _ = ndimage.label(labels == 1)
        return int(np.count_nonzero(np.bincount(regions.ravel())[1:] < 10))

    plain = specks(gmmseg.segment(image, 2).labels)
    smooth = specks(gmmseg.segment(image, 2, smoothing=1.0).labels)
    assert plain > 100 and smooth < plain / 10


def test_smoothing_raises_nuclei_dice_on_background_corrected_intensity():
    # On raw intensity the prior cannot help (see docs/quality.md); on the
    # background-corrected intensity it fills the dim nuclei.
    samples = Path(__file__).resolve().parents[1] / "sample_images"
    image = gmmseg.read_image(samples / "nuclei.tif")
    truth = gmmseg.read_image(samples / "nuclei_mask.tif").data[..., 0] > 0

    def dice(seg):
        fg = seg.labels == 1
        return 2 * np.count_nonzero(fg & truth) / (np.count_nonzero(fg) + np.count_nonzero(truth))

    plain = dice(gmmseg.segment(image, 2, features="contrast"))
    smooth = dice(gmmseg.segment(image, 2, features="contrast", smoothing=1.0))
    assert plain > 0.84 and smooth > plain + 0.02 and smooth > 0.88
