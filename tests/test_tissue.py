"""Tests of gmmseg.tissue (bias field, partial volume, prior) on phantoms with known answers."""

import numpy as np
import pytest

from gmmseg.tissue import (
    AUTO_FIELD_SPAN,
    COARSE_KNOT_DISTANCE,
    DEFAULT_KNOT_DISTANCE,
    CompositionPrior,
    PartialVolumeModel,
    SplineField,
    classify_tissue,
    compositions,
)
from gmmseg.tissue.bias import spline_basis, voxel_coords
from gmmseg.tissue.denoise import diffuse, noise_sigma
from gmmseg.tissue.partial_volume import fit_intensity_model

LEVELS = np.array([30.0, 70.0, 100.0])      # CSF, GM, WM of a T1 scan, in arbitrary units


def brain_phantom(size=36, supersample=4, radii=(0.3, 0.4, 0.46), wobble=0.08):
    """Nested shells (WM inside GM inside CSF) with wavy borders, and their true fractions.

    Each voxel's tissue fractions are measured on a ``supersample``-times
    finer grid, so border voxels hold a mixture as in a real scan.  Returns
    ``(fractions (3, Z, Y, X), mask)``; the mask is the voxels wholly inside
    the CSF shell (a skull-stripped brain).
    """
    n = size * supersample
    c = (np.arange(n) + 0.5) / n - 0.5
    z, y, x = np.meshgrid(c, c, c, indexing="ij", sparse=True)
    r = np.sqrt(x**2 + y**2 + z**2)
    # Wavy borders (gyri): the radius varies with the direction.
    scale = 1 + wobble * np.sin(6 * np.arctan2(y, x)) * np.cos(5 * z / np.maximum(r, 1e-9))
    tissue = np.full((n, n, n), -1, np.int8)
    for k, radius in zip((0, 1, 2), radii[::-1]):
        tissue[r < radius * scale] = k
    blocks = tissue.reshape(size, supersample, size, supersample, size, supersample)
    fractions = np.stack([(blocks == k).mean(axis=(1, 3, 5)) for k in range(3)])
    mask = fractions.sum(axis=0) > 0.999
    return fractions.astype(np.float32), mask


def scan(fractions, mask, noise=1.0, bias=None, seed=0):
    rng = np.random.default_rng(seed)
    image = np.tensordot(LEVELS, fractions, axes=1) + rng.normal(0, noise, mask.shape)
    if bias is not None:
        image = image * bias
    return np.where(mask, image, 0).astype(np.float32)


def dice(labels, truth, mask):
    return np.mean([2 * np.sum((labels == k) & (truth == k) & mask)
                    / (np.sum((labels == k) & mask) + np.sum((truth == k) & mask))
                    for k in range(3)])


@pytest.fixture(scope="module")
def phantom():
    return brain_phantom()


def test_partial_volume_fractions_come_back_within_a_tenth(phantom):
    fractions, mask = phantom
    img = scan(fractions, mask, noise=1.0)
    res = classify_tissue(img, mask, bias=False, beta=0.0)
    error = np.abs(res.fractions - fractions)[:, mask]
    mixed = (fractions[:, mask].max(axis=0) < 0.9)     # border voxels
    assert mixed.sum() > 1500
    assert error.mean() < 0.05
    assert error[:, mixed].mean() < 0.1
    np.testing.assert_allclose(res.fractions[:, mask].sum(axis=0), 1.0, atol=1e-5)
    assert np.all(res.fractions[:, ~mask] == 0) and np.all(res.labels[~mask] == -1)
    # A plain mixture (no partial-volume classes) has no fractions to give:
    plain = classify_tissue(img, mask, bias=False, beta=0.0, partial_volume=False)
    assert np.abs(plain.fractions - fractions)[:, mask][:, mixed].mean() > 0.2


def test_labels_put_the_boundaries_where_tissues_meet(phantom):
    fractions, mask = phantom
    truth = fractions.argmax(axis=0)
    res = classify_tissue(scan(fractions, mask, noise=1.0), mask, bias=False, beta=0.0)
    assert dice(res.labels, truth, mask) > 0.95
    np.testing.assert_allclose(res.model.means, LEVELS, rtol=0.05)


def test_a_known_multiplicative_bias_field_is_recovered(phantom):
    fractions, mask = phantom
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in mask.shape], indexing="ij")
    field = np.exp(0.2 * x - 0.15 * y * z + 0.1 * z**2)           # about +-25 %
    img = scan(fractions, mask, noise=1.0, bias=field)
    res = classify_tissue(img, mask, beta=0.0, knot_distance=18.0)
    estimated = np.log(res.bias[mask])
    assert np.corrcoef(estimated, np.log(field[mask]))[0, 1] > 0.95
    np.testing.assert_allclose(res.restored, img / res.bias, rtol=1e-5)
    truth = fractions.argmax(axis=0)
    uncorrected = classify_tissue(img, mask, beta=0.0, bias=False)
    assert dice(res.labels, truth, mask) > 0.99
    assert dice(res.labels, truth, mask) > dice(uncorrected.labels, truth, mask) + 0.02


def test_the_prior_raises_dice_on_a_noisy_phantom_and_keeps_a_clean_one(phantom):
    fractions, mask = phantom
    truth = fractions.argmax(axis=0)
    noisy = scan(fractions, mask, noise=12.0, seed=1)
    # The prior alone (the diffusion, which also acts on noise, off):
    without = classify_tissue(noisy, mask, bias=False, beta=0.0, denoise=False)
    with_prior = classify_tissue(noisy, mask, bias=False, denoise=False)   # default strength
    assert dice(with_prior.labels, truth, mask) > dice(without.labels, truth, mask) + 0.01
    clean = scan(fractions, mask, noise=1.0)
    plain = dice(classify_tissue(clean, mask, bias=False, beta=0.0, denoise=False).labels,
                 truth, mask)
    smoothed = dice(classify_tissue(clean, mask, bias=False, beta=1.0, denoise=False).labels,
                    truth, mask)
    assert smoothed >= plain - 0.002


def test_denoising_raises_dice_on_a_noisy_phantom_and_keeps_a_clean_one(phantom):
    fractions, mask = phantom
    truth = fractions.argmax(axis=0)
    noisy = scan(fractions, mask, noise=12.0, seed=1)
    raw = classify_tissue(noisy, mask, bias=False, denoise=False)
    smoothed = classify_tissue(noisy, mask, bias=False)
    assert dice(smoothed.labels, truth, mask) > dice(raw.labels, truth, mask) + 0.02
    assert 10.0 < smoothed.info["noise_sigma"] < 14.0
    # The restored image is the input's, not the smoothed one:
    np.testing.assert_array_equal(smoothed.restored, noisy)
    clean = scan(fractions, mask, noise=1.0)
    before = dice(classify_tissue(clean, mask, bias=False, denoise=False).labels, truth, mask)
    after = dice(classify_tissue(clean, mask, bias=False).labels, truth, mask)
    assert after >= before - 0.002


def test_noise_estimate_ignores_borders_and_the_outside():
    rng = np.random.default_rng(3)
    steps = np.repeat([0.0, 100.0, 40.0, 160.0], 10)            # tissue-like borders
    x = steps[None, :, None] + np.zeros((30, 40, 30)) + rng.normal(0, 5.0, (30, 40, 30))
    valid = np.ones(x.shape, bool)
    valid[:, :, :5] = False
    x[~valid] = 1e6                                             # never read
    assert abs(noise_sigma(x, valid) - 5.0) < 0.4
    assert noise_sigma(np.zeros((4, 4)), np.ones((4, 4), bool)) == 0.0


def test_diffusion_smooths_noise_keeps_borders_and_the_mask():
    rng = np.random.default_rng(4)
    clean = np.repeat([50.0, 100.0], 20)[None, :, None] + np.zeros((24, 40, 24))
    x = clean + rng.normal(0, 5.0, clean.shape)
    valid = np.ones(x.shape, bool)
    valid[:, :, :4] = False
    x[~valid] = 500.0
    out = diffuse(x, valid, 2 * 5.0)
    inside = valid.copy()
    inside[:, 17:23] = False                                    # away from the border
    assert np.std((out - clean)[inside]) < 0.5 * np.std((x - clean)[inside])
    # The step keeps its height (a Gaussian of the same reach would halve it
    # next to the border), and nothing flows in from outside the mask:
    left, right = out[:, 19, 4:].mean(), out[:, 20, 4:].mean()
    assert right - left > 40.0
    np.testing.assert_array_equal(out[~valid], 500.0)
    np.testing.assert_array_equal(diffuse(x, valid, 0.0), x.astype(np.float32))


def test_the_prior_does_not_move_a_flat_border():
    """On a flat border both tissues get the same reward: labels stay where the data put them."""
    valid = np.ones((6, 8), bool)
    comp = compositions(2)
    q = np.zeros((3, 48), np.float32)
    q[0, :24] = 1.0      # left half pure class 0 (rows 0-2), right half class 1
    q[1, 24:] = 1.0
    prior = CompositionPrior(valid, comp, 1.0)
    agree = prior.agreement(q).reshape(3, 6, 8)
    # Interior rows: the own class gets the full beta; on the border row the
    # two classes get mirror-image rewards.
    assert agree[0, 0, 3] == pytest.approx(1.0) and agree[1, 5, 3] == pytest.approx(1.0)
    np.testing.assert_allclose(agree[0, 2], agree[1, 3])


def test_prior_strength_means_the_same_for_every_neighbourhood():
    """beta is the reward for full agreement, in 2-D and 3-D, and at the mask's edge."""
    comp = compositions(3)
    for shape in ((5, 7), (4, 5, 6)):
        valid = np.ones(shape, bool)
        valid[(0,) * len(shape)] = False
        q = np.zeros((5, int(valid.sum())), np.float32)
        q[2] = 1.0
        agree = CompositionPrior(valid, comp, 2.5).agreement(q)
        np.testing.assert_allclose(agree[2], 2.5, rtol=1e-5)     # pure WM everywhere
        np.testing.assert_allclose(agree[4], 1.25, rtol=1e-5)    # GM/WM: half of it


def test_spline_field_fits_what_it_can_represent():
    coords = voxel_coords((10, 12, 14), (1.0, 1.0, 2.0))
    field = SplineField(coords, (10.0, 12.0, 28.0), knot_distance=6.0, smoothness=0.0)
    rng = np.random.default_rng(0)
    truth = rng.normal(size=field.sizes)
    values = field.evaluate(truth)
    field.fit(values, np.ones_like(values))
    np.testing.assert_allclose(field.evaluate(), values, atol=1e-4)
    # The same coefficients on a coarser sample of the grid give the same values there.
    coarse = field.resampled(voxel_coords((10, 12, 14), (1.0, 1.0, 2.0), step=2))
    np.testing.assert_allclose(coarse.evaluate(), values[::2, ::2, ::2], atol=1e-4)


def test_spline_basis_is_a_partition_of_unity():
    basis = spline_basis(np.linspace(0, 50, 101), 50.0, 12.0)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0)
    assert basis.shape == (101, 5 + 3)


def test_mixed_classes_have_their_means_between_the_pure_ones():
    model = PartialVolumeModel([10.0, 50.0], [4.0, 4.0], [0.4, 0.4, 0.2])
    y = np.linspace(0, 60, 61).astype(np.float32)
    q = model.responsibilities(y)
    frac = model.fractions(y, q)
    assert frac[1, 30] == pytest.approx(0.5, abs=0.05)
    assert np.all(np.diff(frac[1][5:55]) >= -1e-4)        # more of the bright class as y grows


def test_intensity_model_recovers_means_with_a_dark_partial_volume_tail():
    """A darkest class mostly seen mixed (thin sulci) is still found at its pure intensity."""
    rng = np.random.default_rng(0)
    t = rng.beta(4, 1, 30_000)             # CSF/GM voxels: mostly GM
    y = np.concatenate([rng.normal(30, 2, 2000), (1 - t) * 30 + t * 70 + rng.normal(0, 2, t.size),
                        rng.normal(70, 2, 40_000), rng.normal(100, 2, 30_000)])
    model = fit_intensity_model(y.astype(np.float32), 3)
    np.testing.assert_allclose(model.means, LEVELS, atol=4.0)


def test_bad_input_is_refused_with_the_parameter_named():
    img = np.ones((4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="mask must have shape"):
        classify_tissue(img, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="no voxel"):
        classify_tissue(img, np.zeros((4, 4, 4), bool))
    with pytest.raises(ValueError, match="n_classes"):
        classify_tissue(img, n_classes=1)
    with pytest.raises(ValueError, match="all equal"):
        classify_tissue(img, bias=False)
    with pytest.raises(ValueError, match="positive intensities"):
        classify_tissue(-img - np.arange(64).reshape(4, 4, 4))


def test_auto_knot_distance_is_coarse_without_bias_and_fine_with_one(phantom):
    # 5 mm voxels: a 180 mm head, one span of 200 mm knots, two of 100 mm.
    fractions, mask = phantom
    spacing = (5.0, 5.0, 5.0)
    clean = classify_tissue(scan(fractions, mask, noise=1.0), mask, beta=0.0, spacing=spacing)
    assert clean.info["knot_distance"] == COARSE_KNOT_DISTANCE
    assert clean.info["field_span"] < AUTO_FIELD_SPAN
    assert np.abs(np.log(clean.bias[mask])).max() < 0.05
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in mask.shape], indexing="ij")
    field = np.exp(0.3 * x - 0.25 * y * z + 0.2 * z**2)
    img = scan(fractions, mask, noise=1.0, bias=field)
    biased = classify_tissue(img, mask, beta=0.0, spacing=spacing)
    assert biased.info["knot_distance"] == DEFAULT_KNOT_DISTANCE
    assert biased.info["field_span"] > AUTO_FIELD_SPAN
    assert np.corrcoef(np.log(biased.bias[mask]), np.log(field[mask]))[0, 1] > 0.95
    # Given explicitly, the knot distance is kept whatever the field.
    fixed = classify_tissue(img, mask, beta=0.0, spacing=spacing, knot_distance=200.0)
    assert fixed.info["knot_distance"] == 200.0 and fixed.info["field_span"] is None
    with pytest.raises(ValueError, match="knot_distance"):
        classify_tissue(img, mask, knot_distance="fine")
