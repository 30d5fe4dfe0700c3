"""Tests for gmmseg.features: builders, spec parsing and FeatureExtractor."""

import json

import numpy as np
import pytest
from skimage import color

import gmmseg.features._pixels
from gmmseg.features import (
    FEATURE_BUILDERS,
    FeatureExtractor,
    FeatureItem,
    bands,
    contrast,
    default_feature_names,
    gray,
    hsv,
    lab,
    parse_feature_spec,
    position,
    rgb,
    texture,
)
from gmmseg.io import Image

RGB = ("R", "G", "B")


def make_image(data, valid=None, *, spacing=None, channels=()):
    data = np.asarray(data)
    if valid is None:
        valid = np.ones(data.shape[:-1], bool)
    return Image(data=data, valid=valid, spacing=spacing, channels=tuple(channels))


def random_rgb(shape=(16, 20), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    return make_image(rng.integers(0, top, shape + (3,), dtype=dtype, endpoint=True), channels=RGB)


# --- colour builders ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lab_agrees_with_skimage(dtype):
    img = random_rgb((32, 32), dtype)
    reference = color.rgb2lab(img.data / np.iinfo(dtype).max)
    out = lab(img)
    assert out.shape == (32, 32, 3)
    assert out.dtype == np.float32
    assert np.abs(out - reference).max() < 0.5


def test_lab_of_volume_matches_its_slices():
    vol = make_image(np.random.default_rng(1).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8),
                     channels=RGB)
    out = lab(vol)
    assert out.shape == (3, 5, 7, 3)
    np.testing.assert_array_equal(out[1], lab(make_image(vol.data[1], channels=RGB)))


def test_lab_of_grey_image_is_lightness_only():
    levels = np.arange(0, 256, 17, dtype=np.uint8).reshape(4, 4, 1)
    out = lab(make_image(levels, channels=("gray",)))
    assert out.shape == (4, 4, 1)
    as_rgb = lab(make_image(np.repeat(levels, 3, axis=-1), channels=RGB))
    np.testing.assert_allclose(out[..., 0], as_rgb[..., 0], atol=1e-4)
    assert np.all(np.diff(out.ravel()) > 0)


@pytest.mark.parametrize("builder", [lab, rgb, hsv])
def test_colour_builders_need_rgb(builder):
    four_bands = make_image(np.zeros((4, 4, 4), np.uint16), channels=("b1", "b2", "b3", "b4"))
    with pytest.raises(ValueError, match="needs an RGB image"):
        builder(four_bands)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_rgb_scaled_to_unit_range(dtype):
    top = np.iinfo(dtype).max
    img = make_image(np.array([[[0, top, top // 2]]], dtype), channels=RGB)
    np.testing.assert_allclose(rgb(img)[0, 0], [0.0, 1.0, (top // 2) / top], rtol=1e-6)


def test_hsv_hue_wraps_around_red():
    # Hue 0 (pure red) and hue ~359.9 (red with a hint of blue) are neighbours.
    img = make_image(np.array([[[1.0, 0, 0], [1.0, 0, 0.002], [0, 1.0, 0]]], np.float32),
                     channels=RGB)
    out = hsv(img)[0]
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out[0], [1.0, 0.0, 1.0, 1.0], atol=1e-6)
    assert np.abs(out[0] - out[1]).max() < 0.01
    assert np.abs(out[0] - out[2]).max() > 1.0  # green is far away
    np.testing.assert_allclose(out[:, 0] ** 2 + out[:, 1] ** 2, 1.0, atol=1e-6)


def test_gray_for_rgb_grey_and_bands():
    img = make_image(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8), channels=RGB)
    np.testing.assert_allclose(gray(img)[0, :, 0], [0.299, 0.114], atol=1e-5)
    ct = make_image(np.array([[[-1000], [40]]], np.int16))
    np.testing.assert_array_equal(gray(ct)[..., 0], [[-1000.0, 40.0]])
    multi = make_image(np.array([[[1, 2, 3, 6]]], np.uint16))
    np.testing.assert_allclose(gray(multi), [[[3.0]]])


def test_bands_selection_and_names():
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    img = make_image(data, channels=("b1", "b2", "b3", "b4"))
    np.testing.assert_array_equal(bands(img), data.astype(np.float32))
    picked = bands(img, bands=(3, 1))
    assert picked.shape == (2, 3, 2)
    assert picked.dtype == np.float32
    np.testing.assert_array_equal(picked, data[..., [3, 1]])
    fx = FeatureExtractor([FeatureItem("bands", params={"bands": (3, 1)})], standardize=False)
    fx.fit_transform(img)
    assert fx.names_ == ["b4", "b2"]


@pytest.mark.parametrize(
    ("selection", "error", "match"),
    [((4,), ValueError, "out of range"), ((1, 1), ValueError, "twice"),
     ((), ValueError, "at least one"), ((0.5,), TypeError, "integer")],
)
def test_bands_bad_selection(selection, error, match):
    img = make_image(np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(error, match=match):
        bands(img, bands=selection)


def test_position_2d_orientation_and_spacing():
    img = make_image(np.zeros((5, 11, 1)), spacing=(2.0, 0.5))
    out = position(img)
    assert out.shape == (5, 11, 2)
    x, y = out[..., 0], out[..., 1]
    assert np.all(np.diff(x, axis=1) > 0) and np.all(np.diff(x, axis=0) == 0)
    assert np.all(np.diff(y, axis=0) > 0) and np.all(np.diff(y, axis=1) == 0)
    # Physical extents: y 4 * 2.0 = 8 (longest), x 10 * 0.5 = 5.
    assert y.min() == 0 and y.max() == pytest.approx(1.0)
    assert x.min() == 0 and x.max() == pytest.approx(5 / 8)


def test_position_3d_zyx_with_anisotropic_spacing():
    img = make_image(np.zeros((4, 6, 11, 1)), spacing=(3.0, 1.0, 0.5))
    out = position(img)
    assert out.shape == (4, 6, 11, 3)
    z, y, x = (out[..., i] for i in range(3))
    assert np.all(np.diff(z, axis=0) > 0) and np.all(np.diff(x, axis=2) > 0)
    assert np.all(np.diff(y, axis=1) > 0)
    # Extents: z 9 (longest), y 5, x 5.
    assert (z.max(), y.max(), x.max()) == pytest.approx((1.0, 5 / 9, 5 / 9))
    fx = FeatureExtractor("position")
    fx.fit_transform(img)
    assert fx.names_ == ["z", "y", "x"]


# --- texture -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(24, 24), (6, 24, 24)])
def test_texture_flat_vs_noise(shape):
    rng = np.random.default_rng(0)
    flat = make_image(np.full(shape + (1,), 1000.0, np.float32))
    noise = make_image((1000 + 10 * rng.standard_normal(shape + (1,))).astype(np.float32))
    out_flat = texture(flat, sigmas=(1, 2))
    out_noise = texture(noise, sigmas=(1, 2))
    assert out_flat.shape == shape + (6,)
    np.testing.assert_allclose(out_flat[..., [0, 3]], 1000.0, rtol=1e-6)
    assert np.abs(out_flat[..., [1, 2, 4, 5]]).max() < 1e-3
    assert out_noise[..., 1].mean() > 5.0
    assert out_noise[..., 2].mean() > 1.0
    # Larger scales average more: the local mean varies less.
    assert out_noise[..., 3].std() < out_noise[..., 0].std()


def test_texture_gradient_of_a_ramp():
    ramp = np.tile(np.arange(40, dtype=np.float32) * 0.5, (30, 1))[..., None]
    out = texture(make_image(ramp), sigmas=(2,))
    np.testing.assert_allclose(out[10:20, 10:30, 2], 0.5, rtol=1e-3)
    vol = np.broadcast_to(ramp, (5,) + ramp.shape).copy()
    out3 = texture(make_image(vol, spacing=(1.0, 1.0, 2.0)), sigmas=(2,))
    # Spacing 2 along x: half the slope per unit of the finest spacing.
    np.testing.assert_allclose(out3[2, 10:20, 10:30, 2], 0.25, rtol=1e-3)


@pytest.mark.parametrize("builder", [lambda im: texture(im, sigmas=(1, 3)),
                                     lambda im: contrast(im, sigma=3)],
                         ids=["texture", "contrast"])
def test_local_features_ignore_values_of_invalid_pixels(builder):
    rng = np.random.default_rng(0)
    data = rng.random((20, 20, 1)).astype(np.float32)
    valid = np.ones((20, 20), bool)
    valid[:, :5] = False
    outs = []
    for fill in (0.0, 1e6, np.nan):
        filled = data.copy()
        filled[~valid] = fill
        outs.append(builder(make_image(filled, valid)))
    for out in outs[1:]:
        np.testing.assert_allclose(out[valid], outs[0][valid], rtol=1e-4, atol=1e-5)


# --- contrast ------------------------------------------------------------------


def test_contrast_removes_a_slow_background():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96]
    background = 100 + 2.0 * xx + 1.0 * yy          # a ramp, as uneven illumination
    spots = np.zeros((96, 96), np.float32)
    centres = [(30, 30), (30, 66), (66, 30), (66, 66)]
    for y, x in centres:
        spots[(yy - y) ** 2 + (xx - x) ** 2 <= 9] = 40.0
    data = (background + spots + rng.normal(0, 0.5, spots.shape)).astype(np.float32)
    out = contrast(make_image(data[..., None]), sigma=8)[..., 0]
    assert out.shape == (96, 96) and out.dtype == np.float32
    peaks = [out[(yy - y) ** 2 + (xx - x) ** 2 <= 4].mean() for y, x in centres]
    # The raw peaks differ by the ramp (up to 108); the contrasts agree.
    assert max(peaks) - min(peaks) < 1.0 and min(peaks) > 30.0
    # Between the spots the background is gone.
    assert np.abs(out[44:52, 44:52]).max() < 2.0


def test_contrast_in_a_volume_honours_spacing():
    z = np.arange(24, dtype=np.float32)[:, None, None]
    ramp = np.broadcast_to(10.0 * z, (24, 16, 16)).copy()[..., None]
    # A linear ramp along z is removed away from the first and last slices.
    flat = contrast(make_image(ramp, spacing=(1.0, 1.0, 1.0)), sigma=2)
    assert flat.shape == (24, 16, 16, 1)
    assert np.abs(flat[10:14]).max() < 1e-3
    vol = ramp.copy()
    vol[12, 8, 8, 0] += 50.0
    fine = contrast(make_image(vol, spacing=(1.0, 1.0, 1.0)), sigma=2)
    coarse = contrast(make_image(vol, spacing=(4.0, 1.0, 1.0)), sigma=2)
    # Slices 4 units apart: the 2-unit kernel spans less than one slice along
    # z, so the spot weighs more in its own local mean and keeps less height.
    assert 40.0 < coarse[12, 8, 8, 0] < fine[12, 8, 8, 0] - 0.5


def test_contrast_in_a_spec_and_its_column_name():
    fx = FeatureExtractor([FeatureItem("contrast", params={"sigma": 4})])
    img = make_image(np.random.default_rng(0).random((16, 16, 1)).astype(np.float32))
    X = fx.fit_transform(img)
    assert fx.names_ == ["contrast_s4"] and X.shape == (256, 1)
    assert FeatureExtractor("contrast").fit(img).names_ == ["contrast_s16"]
    with pytest.raises(ValueError, match="sigma"):
        contrast(img, sigma=0)


# --- spec parsing --------------------------------------------------------------


def test_parse_feature_spec():
    items = parse_feature_spec("lab, Position:0.5+texture:1e+1")
    assert [(i.name, i.weight) for i in items] == [
        ("lab", 1.0), ("position", 0.5), ("texture", 10.0)
    ]
    assert parse_feature_spec("lab+position") == parse_feature_spec("lab,position")
    fx = FeatureExtractor("lab,position:0.5")
    assert fx.spec_string == "lab,position:0.5"


@pytest.mark.parametrize(
    ("spec", "match"),
    [("lab,colour", r"unknown feature 'colour'.*known features: auto, bands, contrast, gray"),
     ("lab:abc", "must be a number"), ("lab:0", "> 0"), ("lab:-2", "> 0"),
     ("lab:nan", "> 0"), ("lab,,position", "empty entry"), ("", "empty"),
     ("lab,lab", "twice")],
)
def test_parse_feature_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_feature_spec(spec)


def test_feature_item_checks_params():
    with pytest.raises(TypeError, match="bad params for feature 'lab'"):
        FeatureItem("lab", params={"sigmas": (1,)})
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureExtractor(["lab", "edges"])


def test_auto_features():
    assert default_feature_names(random_rgb()) == ["lab", "position"]
    assert default_feature_names(make_image(np.zeros((3, 3, 1), np.uint16))) == ["gray"]
    assert default_feature_names(make_image(np.zeros((3, 3, 5), np.int16))) == ["bands"]
    fx = FeatureExtractor("auto")
    X = fx.fit_transform(random_rgb())
    assert fx.names_ == ["L", "a", "b", "x", "y"]
    assert fx.spec_string == "lab,position"
    assert X.shape == (16 * 20, 5)
    # Not for a model shared by many images, nor for georeferenced rasters.
    assert default_feature_names(random_rgb(), pooled=True) == ["lab"]
    shared = FeatureExtractor("auto")
    shared.fit_many([random_rgb(), random_rgb()], per_image=50, random_state=0)
    assert shared.spec_string == "lab"
    scene = random_rgb()
    scene.meta["reader"] = "rasterio"
    assert default_feature_names(scene) == ["lab"]
    # A name given beside auto keeps its weight and is not repeated.
    fx = FeatureExtractor("auto,position:0.5")
    fx.fit(random_rgb())
    assert fx.spec_string == "lab,position:0.5" and fx.names_ == ["L", "a", "b", "x", "y"]


# --- FeatureExtractor ------------------------------------------------------------


def test_rows_are_valid_pixels_in_c_order():
    data = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    valid = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 0]], bool)
    extra = np.ones((3, 4), bool)
    extra[2, 0] = False
    fx = FeatureExtractor("bands", standardize=False)
    X = fx.fit_transform(make_image(data, valid), valid=extra)
    assert X.flags.c_contiguous and X.dtype == np.float32
    np.testing.assert_array_equal(X[:, 0], data[valid & extra, 0])


def test_standardisation_uses_valid_rows_only():
    img = random_rgb((20, 24), seed=3)
    valid = np.ones((20, 24), bool)
    valid[5:9, 3:15] = False
    clean = make_image(img.data, valid, channels=RGB)
    data = img.data.copy()
    data[~valid] = 255  # extreme colour in the invalid pixels only
    dirty = make_image(data, valid, channels=RGB)
    fx_clean = FeatureExtractor("lab,position")
    fx_dirty = FeatureExtractor("lab,position")
    X_clean = fx_clean.fit_transform(clean)
    X_dirty = fx_dirty.fit_transform(dirty)
    assert X_dirty.shape == (valid.sum(), 5)
    np.testing.assert_allclose(X_dirty.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(X_dirty.std(axis=0), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(X_dirty, X_clean)
    np.testing.assert_array_equal(fx_dirty.mean_, fx_clean.mean_)


def test_constant_column_is_centred_not_scaled():
    data = np.dstack([np.full((6, 6), 7.0), np.arange(36.0).reshape(6, 6)]).astype(np.float32)
    fx = FeatureExtractor("bands")
    X = fx.fit_transform(make_image(data))
    assert fx.scale_[0] == 1.0
    np.testing.assert_array_equal(X[:, 0], 0.0)
    assert np.isfinite(X).all()


def test_weights_scale_columns():
    img = random_rgb(seed=4)
    X1 = FeatureExtractor("lab,position").fit_transform(img)
    fx = FeatureExtractor("lab:2,position:0.25")
    X2 = fx.fit_transform(img)
    np.testing.assert_allclose(X2[:, :3], 2 * X1[:, :3], rtol=1e-6)
    np.testing.assert_allclose(X2[:, 3:], 0.25 * X1[:, 3:], rtol=1e-6)
    np.testing.assert_array_equal(fx.weights_, [2, 2, 2, 0.25, 0.25])
    unscaled = FeatureExtractor("rgb:3", standardize=False).fit_transform(img)
    np.testing.assert_allclose(unscaled, 3 * rgb(img).reshape(-1, 3), rtol=1e-6)


def test_pca_number_of_components_and_decorrelation():
    fx = FeatureExtractor("lab,position,texture", pca=4)
    X = fx.fit_transform(random_rgb((24, 24), seed=5))
    assert X.shape == (576, 4)
    assert fx.pca_components_.shape == (4, 14) and fx.n_features_ == 4
    cov = np.cov(X.astype(np.float64), rowvar=False)
    off_diagonal = cov - np.diag(np.diag(cov))
    assert np.abs(off_diagonal).max() < 1e-4 * np.diag(cov).max()
    assert np.all(np.diff(np.diag(cov)) <= 1e-6)  # variance decreasing
    with pytest.raises(ValueError, match="only 14 columns"):
        FeatureExtractor("lab,position,texture", pca=20).fit_transform(random_rgb())


def test_pca_variance_fraction():
    rng = np.random.default_rng(0)
    # Two strong directions, two weak ones.
    latent = rng.standard_normal((30, 30, 2)) * [10.0, 5.0]
    mix = np.array([[1.0, 0.5, 0.2, 0.1], [0.3, -1.0, 0.4, 0.2]])
    data = latent @ mix + 0.05 * rng.standard_normal((30, 30, 4))
    img = make_image(data.astype(np.float32))
    fx = FeatureExtractor("bands", standardize=False, pca=0.99)
    X = fx.fit_transform(img)
    assert X.shape == (900, 2)
    assert fx.explained_variance_ratio_.sum() >= 0.99
    full = FeatureExtractor("bands", standardize=False, pca=4)
    full.fit_transform(img)
    assert full.explained_variance_ratio_[:1].sum() < 0.99


def test_transform_uses_fitted_statistics():
    first, second = random_rgb(seed=6), random_rgb((10, 12), seed=7)
    fx = FeatureExtractor("rgb")
    fx.fit_transform(first)
    X2 = fx.transform(second)
    expected = (rgb(second).reshape(-1, 3) - fx.mean_) / fx.scale_
    np.testing.assert_allclose(X2, expected, rtol=1e-5, atol=1e-5)
    own = FeatureExtractor("rgb").fit_transform(second)
    assert not np.allclose(X2, own)
    np.testing.assert_array_equal(fx.transform(first), fx.fit_transform(first))


def test_transform_checks_the_image():
    fx = FeatureExtractor("lab")
    with pytest.raises(ValueError, match="not fitted"):
        fx.transform(random_rgb())
    fx.fit_transform(random_rgb())
    with pytest.raises(ValueError, match="fitted on images with 3 channel"):
        fx.transform(make_image(np.zeros((4, 4, 1), np.uint8)))
    with pytest.raises(ValueError, match="fitted on 2-D images"):
        fx.transform(make_image(np.zeros((2, 4, 4, 3), np.uint8), channels=RGB))
    with pytest.raises(ValueError, match="spatial shape"):
        fx.transform(random_rgb(), valid=np.ones((3, 3), bool))


def test_fit_errors():
    with pytest.raises(ValueError, match="no valid pixels"):
        FeatureExtractor("gray").fit_transform(
            make_image(np.zeros((3, 3, 1)), np.zeros((3, 3), bool)))
    inf = np.zeros((3, 3, 1), np.float32)
    inf[1, 1] = np.inf
    with pytest.raises(ValueError, match="'bands' is NaN or infinite at 1 valid pixel"):
        FeatureExtractor("bands").fit_transform(make_image(inf))
    with pytest.raises(ValueError, match="pca as a float"):
        FeatureExtractor("lab", pca=1.5)
    with pytest.raises(TypeError, match="pca must be"):
        FeatureExtractor("lab", pca=True)


def test_sample_estimates_statistics():
    img = random_rgb((64, 64), seed=8)
    fx_full, fx_a, fx_b = (FeatureExtractor("lab,position") for _ in range(3))
    fx_full.fit_transform(img)
    X_a = fx_a.fit_transform(img, sample=1000, random_state=0)
    X_b = fx_b.fit_transform(img, sample=1000, random_state=0)
    assert X_a.shape == (4096, 5)
    np.testing.assert_array_equal(X_a, X_b)
    np.testing.assert_allclose(fx_a.mean_, fx_full.mean_, atol=0.1 * fx_full.scale_.max())
    assert not np.array_equal(fx_a.mean_, fx_full.mean_)


# --- fit_many: statistics pooled over several images ------------------------


def test_fit_many_on_one_image_equals_fit_transform():
    img = random_rgb((20, 24), seed=20)
    fx_one, fx_many = FeatureExtractor("lab,position", pca=3), FeatureExtractor(
        "lab,position", pca=3)
    X_one = fx_one.fit_transform(img)
    X_many = fx_many.fit_many([img], per_image=None)
    np.testing.assert_array_equal(X_many, X_one)
    for name in ("mean_", "scale_", "weights_", "pca_components_", "pca_mean_"):
        np.testing.assert_array_equal(getattr(fx_many, name), getattr(fx_one, name))
    assert fx_many.names_ == fx_one.names_ and fx_many.n_features_ == 3


def test_fit_many_pools_rows_of_all_images():
    dark, bright = random_rgb((10, 16), seed=21), random_rgb((6, 16), seed=22)
    bright = make_image(bright.data // 2 + 128, channels=RGB)
    fx = FeatureExtractor("rgb")
    X = fx.fit_many(iter([dark, bright]), per_image=None)  # a one-pass generator will do
    stacked = make_image(np.concatenate([dark.data, bright.data]), channels=RGB)
    reference = FeatureExtractor("rgb")
    np.testing.assert_array_equal(X, reference.fit_transform(stacked))
    np.testing.assert_array_equal(fx.mean_, reference.mean_)
    np.testing.assert_array_equal(fx.transform(bright), X[160:])


def test_fit_many_draws_at_most_per_image_rows_reproducibly():
    small, large = random_rgb((5, 6), seed=23), random_rgb((40, 50), seed=24)
    fx_a, fx_b = FeatureExtractor("lab"), FeatureExtractor("lab")
    X_a = fx_a.fit_many([small, large], per_image=100, random_state=3)
    X_b = fx_b.fit_many([small, large], per_image=100, random_state=3)
    assert X_a.shape == (30 + 100, 3) and X_a.dtype == np.float32
    np.testing.assert_array_equal(X_a, X_b)
    # The drawn rows are real rows of the large image, in pixel order.
    rows = fx_a.transform(large)
    picked = X_a[30:]
    positions = [int(np.flatnonzero((rows == r).all(axis=1))[0]) for r in picked]
    assert positions == sorted(positions)
    other = FeatureExtractor("lab").fit_many([small, large], per_image=100, random_state=4)
    assert not np.array_equal(other, X_a)


def test_fit_many_skips_images_without_valid_pixels():
    good = random_rgb((8, 8), seed=25)
    empty = make_image(good.data, np.zeros((8, 8), bool), channels=RGB)
    fx = FeatureExtractor("rgb")
    X = fx.fit_many([empty, good, empty], per_image=None)
    np.testing.assert_array_equal(X, FeatureExtractor("rgb").fit_transform(good))
    with pytest.raises(ValueError, match="none of the 2 image"):
        FeatureExtractor("rgb").fit_many([empty, empty])


def test_fit_many_errors():
    rgb_img = random_rgb((6, 6), seed=26)
    grey = make_image(np.zeros((6, 6, 1), np.uint8))
    with pytest.raises(ValueError, match="at least one image"):
        FeatureExtractor("lab").fit_many([])
    with pytest.raises(ValueError, match="has 1 channel.*has 3"):
        FeatureExtractor("lab").fit_many([rgb_img, grey])
    with pytest.raises(ValueError, match="spatial dimensions"):
        FeatureExtractor("gray").fit_many(
            [grey, make_image(np.zeros((2, 6, 6, 1), np.uint8))])
    # "auto" must resolve to the same features on every image.
    not_rgb = make_image(rgb_img.data, channels=("b1", "b2", "b3"))
    with pytest.raises(ValueError, match="resolve to 'bands'"):
        FeatureExtractor("auto").fit_many([rgb_img, not_rgb])
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="per_image"):
            FeatureExtractor("lab").fit_many([rgb_img], per_image=bad)


def test_dict_round_trip_gives_identical_output():
    img, other = random_rgb(seed=9), random_rgb((9, 7), seed=10)
    spec = [FeatureItem("lab"), FeatureItem("texture", 0.5, {"sigmas": (1, 3)}), "position:2"]
    fx = FeatureExtractor(spec, pca=5)
    X = fx.fit_transform(img)
    stored = json.loads(json.dumps(fx.to_dict()))
    back = FeatureExtractor.from_dict(stored)
    assert back.names_ == fx.names_ and back.spec_string == "lab,texture:0.5,position:2"
    np.testing.assert_array_equal(back.transform(img), X)
    np.testing.assert_array_equal(back.transform(other), fx.transform(other))
    unfitted = FeatureExtractor.from_dict(FeatureExtractor("gray,position").to_dict())
    assert not unfitted.is_fitted and unfitted.spec_string == "gray,position"
    with pytest.raises(ValueError, match="not a gmmseg feature extractor"):
        FeatureExtractor.from_dict({"format": "other"})
    broken = dict(stored, fitted=dict(stored["fitted"], mean=[0.0]))
    with pytest.raises(ValueError, match="malformed.*mean/scale/weights"):
        FeatureExtractor.from_dict(broken)


def test_user_callables_mixed_with_names():
    img = random_rgb(seed=11)

    def redness(image):
        return image.data[..., 0].astype(np.float64)  # (H, W), float64 on purpose

    def two(image):
        return np.stack([image.data[..., 1], image.data[..., 2]], axis=-1)

    fx = FeatureExtractor(["position", redness, two], standardize=False)
    X = fx.fit_transform(img)
    assert fx.names_ == ["x", "y", "redness", "two_0", "two_1"]
    np.testing.assert_array_equal(X[:, 2], img.data[..., 0].ravel())
    np.testing.assert_array_equal(X[:, 3:], img.data[..., 1:].reshape(-1, 2))
    with pytest.raises(ValueError, match="user callable"):
        fx.to_dict()
    lam = FeatureExtractor([lambda image: np.zeros(image.spatial_shape)])
    lam.fit_transform(img)
    assert lam.names_ == ["custom"]
    with pytest.raises(ValueError, match=r"returned shape \(3, 3\)"):
        FeatureExtractor([lambda image: np.zeros((3, 3))]).fit_transform(img)


def test_volume_features():
    rng = np.random.default_rng(12)
    vol = make_image(rng.integers(0, 4000, (4, 8, 9, 1), dtype=np.uint16),
                     spacing=(2.5, 1.0, 1.0))
    fx = FeatureExtractor("gray,position,texture:0.5")
    X = fx.fit_transform(vol)
    assert X.shape == (4 * 8 * 9, 1 + 3 + 9)
    assert fx.spatial_ndim_ == 3 and fx.input_channels_ == 1
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-5)


@pytest.mark.parametrize("shape", [(7, 9), (3, 7, 9)])
def test_results_do_not_depend_on_stripe_size(shape, monkeypatch):
    rng = np.random.default_rng(14)
    data = rng.integers(0, 255, shape + (3,), dtype=np.uint8, endpoint=True)
    valid = rng.random(shape) > 0.3
    img = make_image(data, valid, spacing=(2.0,) + (1.0,) * (len(shape) - 1), channels=RGB)
    spec = "lab,rgb,hsv,gray,bands,position"
    whole = {name: f(img) for name, f in FEATURE_BUILDERS.items()}
    X_whole = FeatureExtractor(spec, standardize=False).fit_transform(img)
    # Stripes of 2 rows; with 7 rows per slice some stripes span two slices.
    monkeypatch.setattr(gmmseg.features._pixels, "_STRIPE_PIXELS", 18)
    for name, f in FEATURE_BUILDERS.items():
        np.testing.assert_array_equal(f(img), whole[name], err_msg=name)
    X_striped = FeatureExtractor(spec, standardize=False).fit_transform(img)
    np.testing.assert_array_equal(X_striped, X_whole)
    stacked = np.concatenate([whole[n] for n in spec.split(",")], axis=-1)
    np.testing.assert_array_equal(X_whole, stacked[valid])


@pytest.mark.parametrize("name", sorted(FEATURE_BUILDERS))
def test_inputs_are_not_modified(name):
    data = np.random.default_rng(13).random((10, 12, 3)).astype(np.float32)
    valid = np.ones((10, 12), bool)
    valid[0, :4] = False
    data[0, :4] = np.nan
    img = make_image(data, valid, channels=RGB)
    before_data, before_valid = data.copy(), valid.copy()
    out = FEATURE_BUILDERS[name](img)
    assert out.dtype == np.float32 and out.shape[:2] == (10, 12)
    X = FeatureExtractor(name, pca=1).fit_transform(img)
    assert X.shape == (valid.sum(), 1) and np.isfinite(X).all()
    np.testing.assert_array_equal(img.data, before_data)
    np.testing.assert_array_equal(img.valid, before_valid)


def test_flat_block_statistics_match_plain_numpy(monkeypatch):
    from gmmseg.features import _stats
    monkeypatch.setattr(_stats, "_BLOCK_ROWS", 16)   # many blocks and a ragged last one
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(16 * 7 + 5, 5)) * [1, 10, 100, 1e-3, 5] + [0, 1e4, -3, 7, 0])
    X = X.astype(np.float32)
    mean, std = _stats._column_mean_std(X)
    # Deviations are float32, as the data are: float32-level agreement.
    ref_std = X.astype(np.float64).std(axis=0)
    assert np.all(np.abs(mean - X.astype(np.float64).mean(axis=0)) <= 1e-6 * ref_std)
    np.testing.assert_allclose(std, ref_std, rtol=1e-6)
    offset, factor = mean, 1 / std
    expected = (X - offset.astype(np.float32)) * factor.astype(np.float32)
    got = X.copy()
    _stats._affine_in_place(got, offset, factor)
    np.testing.assert_array_equal(got, expected)       # the same float32 operations
    strided = np.asfortranarray(X)
    _stats._affine_in_place(strided, offset, factor)
    np.testing.assert_array_equal(strided, expected)


def test_kept_maps_are_the_builders_output_and_change_no_feature():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    valid = np.ones((13, 17), bool)
    valid[2:5, 3:9] = False
    img = make_image(data, valid, channels=RGB)
    maps = {"lab": None, "texture": None, "hsv": "untouched"}
    fx = FeatureExtractor("lab,position,texture")
    X = fx.fit_transform(img, maps=maps)
    np.testing.assert_array_equal(maps["lab"], lab(img))    # every pixel, valid or not
    assert maps["texture"] is None and maps["hsv"] == "untouched"
    np.testing.assert_array_equal(X, FeatureExtractor("lab,position,texture").fit_transform(img))
    kept = {"position": None}
    np.testing.assert_array_equal(fx.transform(img, maps=kept), X)
    np.testing.assert_array_equal(kept["position"], position(img))
