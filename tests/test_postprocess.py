"""Tests for gmmseg.postprocess: labels, small-region cleanup, regions, pictures, statistics."""

import json
import re

import numpy as np
import pytest
from scipy import ndimage as ndi
from sklearn.metrics import adjusted_rand_score

from gmmseg import postprocess
from gmmseg.postprocess import _arrays, _graph
from gmmseg.postprocess import (
    boundaries,
    check_region_mode,
    region_hierarchy,
    display_rgb,
    labels_from_proba,
    overlay,
    remove_small_regions,
    scatter_valid,
    segment_colors,
    segment_stats,
)


@pytest.fixture
def small_blocks(monkeypatch):
    """Force the chunked code paths to use many tiny blocks."""
    monkeypatch.setattr(_arrays, "_BLOCK", 7)


def _region_sizes(labels, connectivity=1):
    """Sizes of all connected equal-label regions of pixels >= 0."""
    structure = ndi.generate_binary_structure(labels.ndim, connectivity)
    sizes = []
    for value in np.unique(labels[labels >= 0]):
        regions, n = ndi.label(labels == value, structure=structure)
        sizes += np.bincount(regions.ravel())[1:].tolist()
    return sizes


# ----------------------------------------------------------------------------
# labels_from_proba / scatter_valid


def test_labels_from_proba_argmax_and_invalid():
    proba = np.array(
        [
            [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]],
            [[0.2, 0.5, 0.3], [np.nan, np.nan, np.nan]],
        ],
        dtype=np.float32,
    )
    valid = np.array([[True, True], [True, False]])
    labels = labels_from_proba(proba, valid)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [[0, 2], [1, -1]])
    np.testing.assert_array_equal(labels_from_proba(proba[:1]), [[0, 2]])


def test_labels_from_proba_volume_and_blocks_match_argmax(small_blocks):
    rng = np.random.default_rng(0)
    proba = rng.random((3, 4, 5, 6)).astype(np.float32)
    labels = labels_from_proba(proba)
    assert labels.shape == (3, 4, 5)
    np.testing.assert_array_equal(labels, proba.argmax(axis=-1))


def test_labels_from_proba_ties_go_to_lower_index():
    proba = np.full((2, 2, 3), 1.0 / 3.0)
    assert np.all(labels_from_proba(proba) == 0)


def test_labels_from_proba_errors():
    with pytest.raises(TypeError, match="proba"):
        labels_from_proba(np.zeros((2, 2, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="valid must have shape"):
        labels_from_proba(np.zeros((2, 2, 3)), np.ones((2, 3), dtype=bool))
    with pytest.raises(TypeError, match="valid must be a bool"):
        labels_from_proba(np.zeros((2, 2, 3)), np.ones((2, 2)))


def test_scatter_valid_round_trip():
    rng = np.random.default_rng(0)
    data = rng.random((4, 5, 3)).astype(np.float32)
    valid = rng.random((4, 5)) > 0.3
    out = scatter_valid(data[valid], valid, np.nan)
    assert out.shape == (4, 5, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[valid], data[valid])
    assert np.all(np.isnan(out[~valid]))

    labels = np.arange(valid.sum(), dtype=np.int32)
    label_map = scatter_valid(labels, valid, -1)
    np.testing.assert_array_equal(label_map[valid], labels)
    assert np.all(label_map[~valid] == -1)


def test_scatter_valid_volume_with_zero_fill():
    valid = np.zeros((2, 3, 4), dtype=bool)
    valid[1, 2, 3] = True
    out = scatter_valid(np.array([[0.25, 0.75]]), valid, 0)
    assert out.shape == (2, 3, 4, 2)
    np.testing.assert_array_equal(out[1, 2, 3], [0.25, 0.75])
    assert out.sum() == 1.0


def test_scatter_valid_errors():
    valid = np.array([True, False, True])
    with pytest.raises(ValueError, match="one row per valid pixel"):
        scatter_valid(np.zeros(3), valid, 0)
    with pytest.raises(ValueError, match="fill"):
        scatter_valid(np.zeros(2, dtype=np.int32), valid, np.nan)
    with pytest.raises(ValueError, match="fill"):
        scatter_valid(np.zeros(2, dtype=np.uint8), valid, -1)
    with pytest.raises(TypeError, match="valid"):
        scatter_valid(np.zeros(2), np.array([1, 0, 1]), 0)


# ----------------------------------------------------------------------------
# remove_small_regions


def test_small_islands_absorbed_large_ones_kept():
    labels = np.zeros((20, 20), dtype=np.int32)
    labels[3, 3] = 1  # 1 pixel
    labels[10:13, 10:13] = 2  # 9 pixels
    labels[2:6, 12:16] = 3  # 16 pixels
    before = labels.copy()
    out = remove_small_regions(labels, 10)
    expected = np.zeros_like(labels)
    expected[2:6, 12:16] = 3
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(labels, before)
    assert not np.shares_memory(out, labels)
    assert out.dtype == labels.dtype
    # The 9-pixel island is exactly at the limit for min_size=9.
    np.testing.assert_array_equal(remove_small_regions(labels, 9)[10:13, 10:13], 2)


def test_island_goes_to_label_with_longest_border():
    labels = np.zeros((12, 20), dtype=np.int32)
    labels[:, 10:] = 1
    # Columns 9..12: borders 4 pixel pairs with label 0, 8 with label 1.
    labels[5:7, 9:13] = 2
    out = remove_small_regions(labels, 10)
    expected = np.zeros_like(labels)
    expected[:, 10:] = 1
    expected[5:7, 9:13] = 1
    np.testing.assert_array_equal(out, expected)

    # Shifted left, the same island borders label 0 the longest.
    labels = np.zeros((12, 20), dtype=np.int32)
    labels[:, 10:] = 1
    labels[5:7, 7:11] = 2
    out = remove_small_regions(labels, 10)
    np.testing.assert_array_equal(out[5:7, 7:10], 0)
    np.testing.assert_array_equal(out[5:7, 10], 0)


def test_invalid_pixels_never_change_nor_absorb():
    labels = np.zeros((12, 12), dtype=np.int32)
    labels[:6, :6] = -1
    labels[2, 2] = 1  # island inside the invalid block: nothing to merge into
    labels[6, 6] = 2  # touches invalid (left/top) and label 0
    out = remove_small_regions(labels, 5)
    np.testing.assert_array_equal(out == -1, labels == -1)
    assert out[2, 2] == 1
    assert out[6, 6] == 0


def test_small_neighbours_do_not_swap():
    # Two small regions in a valid pocket surrounded by invalid pixels: the
    # smaller joins the larger once, then nothing is left to merge into.
    labels = np.full((5, 6), -1, dtype=np.int32)
    labels[2, 1] = 1
    labels[2, 2:4] = 2
    out = remove_small_regions(labels, 10)
    np.testing.assert_array_equal(out[2, 1:4], [2, 2, 2])
    np.testing.assert_array_equal(out == -1, labels == -1)


def test_nested_small_regions_end_in_the_big_one():
    labels = np.zeros((15, 15), dtype=np.int32)
    labels[5:10, 5:10] = 1  # 25 pixels, ring around the speck
    labels[7, 7] = 2
    out = remove_small_regions(labels, 30)
    assert np.all(out == 0)


def test_connectivity_changes_what_is_a_region():
    labels = np.zeros((6, 6), dtype=np.int32)
    labels[2, 2] = labels[3, 3] = 1  # diagonal neighbours
    assert np.all(remove_small_regions(labels, 2, connectivity=1) == 0)
    np.testing.assert_array_equal(remove_small_regions(labels, 2, connectivity=2), labels)


def test_volume_islands():
    labels = np.zeros((10, 10, 10), dtype=np.int32)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels
    labels[5:8, 5:8, 5:8] = 2  # 27 voxels
    out = remove_small_regions(labels, 9)
    expected = np.zeros_like(labels)
    expected[5:8, 5:8, 5:8] = 2
    np.testing.assert_array_equal(out, expected)
    # Face connectivity in 3-D: a voxel touching only by a corner is separate.
    labels = np.zeros((4, 4, 4), dtype=np.int32)
    labels[1, 1, 1] = labels[2, 2, 2] = 1
    assert np.all(remove_small_regions(labels, 2, connectivity=1) == 0)
    np.testing.assert_array_equal(remove_small_regions(labels, 2, connectivity=3), labels)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_no_small_region_left_on_random_labels(connectivity):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(40, 50)).astype(np.int32)
    out = remove_small_regions(labels, 6, connectivity=connectivity)
    assert min(_region_sizes(out, connectivity)) >= 6
    assert set(np.unique(out)) <= {0, 1, 2}


def test_border_ties_go_to_lower_label_with_many_labels():
    # One-pixel-wide stripes labelled 10 * column; the 3-pixel island borders
    # labels 30, 40 and 50 twice each, 20 and 60 once.
    labels = np.tile(10 * np.arange(10, dtype=np.int64), (10, 1))
    labels[5, 3:6] = 99
    out = remove_small_regions(labels, 4)
    expected = np.tile(10 * np.arange(10, dtype=np.int64), (10, 1))
    expected[5, 3:6] = 30
    np.testing.assert_array_equal(out, expected)


def test_large_label_values():
    labels = np.full((8, 8), 10**9, dtype=np.int64)
    labels[:, 4:] = 7
    labels[3, 2] = 123456
    out = remove_small_regions(labels, 3)
    assert out[3, 2] == 10**9
    assert np.count_nonzero(out != labels) == 1


def test_all_invalid_labels_unchanged():
    labels = np.full((4, 5), -1, dtype=np.int32)
    np.testing.assert_array_equal(remove_small_regions(labels, 10), labels)


def test_remove_small_regions_unsigned_and_trivial_sizes():
    labels = np.zeros((5, 5), dtype=np.uint8)
    labels[2, 2] = 7
    out = remove_small_regions(labels, 2)
    assert out.dtype == np.uint8 and np.all(out == 0)
    kept = remove_small_regions(labels, 1)
    np.testing.assert_array_equal(kept, labels)
    assert not np.shares_memory(kept, labels)


def test_remove_small_regions_errors():
    with pytest.raises(TypeError, match="labels must be an integer"):
        remove_small_regions(np.zeros((3, 3)), 2)
    with pytest.raises(ValueError, match="labels must be 2-D or 3-D"):
        remove_small_regions(np.zeros(3, dtype=np.int32), 2)
    with pytest.raises(ValueError, match="connectivity"):
        remove_small_regions(np.zeros((3, 3), dtype=np.int32), 2, connectivity=3)
    with pytest.raises(ValueError, match="min_size"):
        remove_small_regions(np.zeros((3, 3), dtype=np.int32), -1)
    with pytest.raises(TypeError, match="min_size"):
        remove_small_regions(np.zeros((3, 3), dtype=np.int32), 2.5)
    with pytest.raises(ValueError, match="-1 for invalid"):
        remove_small_regions(np.full((3, 3), -2, dtype=np.int32), 2)


# ----------------------------------------------------------------------------
# display_rgb


def test_display_uint16_grey_full_range():
    grey = np.linspace(0, 1020, 12).astype(np.uint16).reshape(3, 4, 1)
    rgb = display_rgb(grey, percentiles=(0, 100))
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    expected = np.rint(grey[..., 0] / 1020 * 255).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], expected)


def test_display_percentiles_clip_outliers(small_blocks):
    rng = np.random.default_rng(0)
    grey = rng.integers(100, 201, size=(20, 30)).astype(np.uint16)
    grey[0, 0] = 60000
    rgb = display_rgb(grey)
    assert rgb[0, 0, 0] == 255
    # Without clipping, 200 would map to 200 / 60000 * 255 < 1.
    assert rgb[grey == 200, 0].min() == 255
    assert rgb[grey == 100, 0].max() == 0
    order = np.argsort(grey, axis=None)
    assert np.all(np.diff(rgb[..., 0].ravel()[order].astype(int)) >= 0)


def test_display_float_nan_with_valid_mask():
    data = np.linspace(0.0, 1.0, 16).reshape(4, 4, 1)
    data[0, 0] = np.nan
    data[3, 3] = -9999.0  # nodata value
    valid = np.isfinite(data[..., 0]) & (data[..., 0] > -9999.0)
    rgb = display_rgb(data, valid, percentiles=(0, 100))
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert rgb[3, 3].tolist() == [0, 0, 0]
    # The range comes from valid pixels only: 1/15 -> 0, 14/15 -> 255.
    assert rgb[0, 1, 0] == 0
    assert rgb[3, 2, 0] == 255
    assert rgb[1, 3, 0] == np.rint((7 / 15 - 1 / 15) / (13 / 15) * 255)


def test_display_float_nan_without_mask_is_black():
    data = np.array([[np.nan, 0.0], [0.5, 1.0]], dtype=np.float32)
    rgb = display_rgb(data, percentiles=(0, 100))
    np.testing.assert_array_equal(rgb[..., 1], [[0, 0], [128, 255]])


def test_display_bands_select_channels():
    data = np.stack([np.full((3, 4), 10 * b + 5, dtype=np.uint8) for b in range(5)], axis=-1)
    data[0, 0] = [1, 2, 3, 4, 5]
    rgb = display_rgb(data, bands=(3, 2, 1))
    np.testing.assert_array_equal(rgb, data[..., [3, 2, 1]])
    np.testing.assert_array_equal(display_rgb(data), data[..., :3])
    grey = display_rgb(data, bands=(4,))
    np.testing.assert_array_equal(grey, np.repeat(data[..., 4:], 3, axis=-1))


def test_display_bands_stretch_each_channel_alone():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, size=(6, 7, 5)).astype(np.uint16)
    data[..., 3] *= 10  # a much brighter band
    rgb = display_rgb(data, bands=(3, 2, 1))
    for j, band in enumerate((3, 2, 1)):
        np.testing.assert_array_equal(rgb[..., j], display_rgb(data[..., band])[..., 0])


def test_display_uint8_rgb_unchanged():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    before = image.copy()
    rgb = display_rgb(image)
    np.testing.assert_array_equal(rgb, image)
    assert not np.shares_memory(rgb, image)
    np.testing.assert_array_equal(image, before)


def test_display_two_channels_and_bool():
    data = np.zeros((2, 2, 2), dtype=np.uint8)
    data[..., 0] = [[1, 2], [3, 4]]
    data[..., 1] = 99
    rgb = display_rgb(data)
    np.testing.assert_array_equal(rgb, np.repeat(data[..., :1], 3, axis=-1))
    mask = np.array([[True, False]])
    np.testing.assert_array_equal(display_rgb(mask)[..., 0], [[255, 0]])


def test_display_sparse_valid_pixels_on_large_image():
    # Large enough to subsample; the only valid pixels sit off the subsample grid.
    data = np.zeros((1100, 1000), dtype=np.uint16)
    valid = np.zeros(data.shape, dtype=bool)
    data[1, 1], data[3, 5] = 10, 20
    valid[1, 1] = valid[3, 5] = True
    rgb = display_rgb(data, valid, percentiles=(0, 100))
    assert rgb[1, 1, 0] == 0 and rgb[3, 5, 0] == 255
    assert rgb.sum() == 3 * 255


def test_display_errors():
    with pytest.raises(ValueError, match="bands"):
        display_rgb(np.zeros((2, 2, 3)), bands=(0, 1, 3))
    with pytest.raises(ValueError, match="bands"):
        display_rgb(np.zeros((2, 2, 3)), bands=(0, 1))
    with pytest.raises(ValueError, match="percentiles"):
        display_rgb(np.zeros((2, 2, 1)), percentiles=(90, 10))
    with pytest.raises(ValueError, match="one slice"):
        display_rgb(np.zeros((2, 2, 2, 1)))
    with pytest.raises(ValueError, match="valid"):
        display_rgb(np.zeros((2, 2, 1)), np.ones((3, 2), dtype=bool))


# ----------------------------------------------------------------------------
# colours, boundaries, overlay


@pytest.mark.parametrize("n", [0, 1, 10, 11, 64, 300])
def test_segment_colors_distinct(n):
    colors = segment_colors(n)
    assert colors.shape == (n, 3) and colors.dtype == np.uint8
    assert len(np.unique(colors, axis=0)) == n


def test_segment_colors_deterministic_and_prefix_stable():
    np.testing.assert_array_equal(segment_colors(300), segment_colors(300))
    np.testing.assert_array_equal(segment_colors(300)[:7], segment_colors(7))
    assert segment_colors(1).tolist() == [[31, 119, 180]]
    with pytest.raises(ValueError, match="n must be"):
        segment_colors(-1)


def test_boundaries_thin_thick_and_invalid():
    labels = np.array([[0, 0, 1, 1, -1, -1, 2]])
    np.testing.assert_array_equal(boundaries(labels), [[0, 1, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(boundaries(labels, mode="thick"), [[0, 1, 1, 0, 0, 0, 0]])
    volume = np.zeros((3, 2, 2), dtype=np.int32)
    volume[2] = 1
    mask = boundaries(volume)
    assert mask[1].all() and not mask[0].any() and not mask[2].any()
    with pytest.raises(ValueError, match="mode"):
        boundaries(labels, mode="outer")


def _two_segment_scene():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 10, 3), dtype=np.uint8)
    labels = np.zeros((6, 10), dtype=np.int32)
    labels[:, 5:] = 1
    labels[0, :] = -1
    return rgb, labels


def test_overlay_alpha_zero_returns_image(small_blocks):
    rgb, labels = _two_segment_scene()
    before = rgb.copy()
    out = overlay(rgb, labels, alpha=0.0, boundaries=False)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(rgb, before)


def test_overlay_boundaries_where_labels_change():
    rgb, labels = _two_segment_scene()
    out = overlay(rgb, labels, alpha=0.0, boundary_color=(1, 2, 3))
    drawn = np.all(out == [1, 2, 3], axis=-1) & np.any(rgb != [1, 2, 3], axis=-1)
    expected = np.zeros(labels.shape, dtype=bool)
    expected[1:, 4] = True  # left of every 0|1 change; invalid row 0 untouched
    np.testing.assert_array_equal(drawn, expected)
    np.testing.assert_array_equal(out[~expected], rgb[~expected])


def test_overlay_blend_values_and_invalid_not_coloured(small_blocks):
    rgb, labels = _two_segment_scene()
    colors = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    out = overlay(rgb, labels, alpha=0.25, boundaries=False, colors=colors)
    expected = 0.75 * rgb.astype(float) + 0.25 * colors[np.maximum(labels, 0)]
    expected[labels == -1] = 0.75 * rgb[labels == -1]
    np.testing.assert_allclose(out, np.rint(expected), atol=1)
    full = overlay(rgb, labels, alpha=1.0, boundaries=False, colors=colors)
    np.testing.assert_array_equal(full[1:], colors[labels[1:]])
    assert np.all(full[0] == 0)


def test_overlay_default_colors_and_errors():
    rgb, labels = _two_segment_scene()
    out = overlay(rgb, labels, alpha=1.0, boundaries=False)
    np.testing.assert_array_equal(out[3, 2], segment_colors(2)[0])
    with pytest.raises(ValueError, match="colors must have a row"):
        overlay(rgb, labels, colors=[[0, 0, 0]])
    with pytest.raises(ValueError, match="colors must hold values"):
        overlay(rgb, labels, colors=[[0, 0, 300], [0, 0, 0]])
    with pytest.raises(TypeError, match="display_rgb"):
        overlay(rgb.astype(np.float32), labels)
    with pytest.raises(ValueError, match="labels must have the shape"):
        overlay(rgb, labels[1:])
    with pytest.raises(ValueError, match="alpha"):
        overlay(rgb, labels, alpha=1.5)


# ----------------------------------------------------------------------------
# segment_stats


def test_segment_stats_hand_computed():
    labels = np.array([[0, 0, 1, -1], [1, 1, 2, -1]], dtype=np.int32)
    data = np.zeros((2, 4, 2), dtype=np.uint16)
    data[..., 0] = [[10, 20, 1, 999], [3, 5, 7, 999]]
    data[..., 1] = [[0, 4, 2, 999], [2, 2, 9, 999]]
    stats = segment_stats(labels, data, 4)
    assert [s["label"] for s in stats] == [0, 1, 2, 3]
    assert [s["pixels"] for s in stats] == [2, 3, 1, 0]
    assert [s["share"] for s in stats] == pytest.approx([2 / 6, 3 / 6, 1 / 6, 0.0])
    assert stats[0]["mean"] == pytest.approx([15.0, 2.0])
    assert stats[0]["std"] == pytest.approx([5.0, 2.0])
    assert stats[1]["mean"] == pytest.approx([3.0, 2.0])
    assert stats[1]["std"] == pytest.approx([np.std([1, 3, 5]), 0.0])
    assert stats[2]["mean"] == pytest.approx([7.0, 9.0])
    assert stats[2]["std"] == pytest.approx([0.0, 0.0])
    assert stats[3]["mean"] is None and stats[3]["std"] is None
    # Plain Python types, so the report can be written as JSON.
    assert json.loads(json.dumps(stats)) == stats
    assert type(stats[0]["pixels"]) is int and type(stats[0]["mean"][0]) is float


def test_segment_stats_valid_mask_and_volume(small_blocks):
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 3, size=(3, 4, 5)).astype(np.int32)
    data = rng.normal(100.0, 5.0, size=(3, 4, 5)).astype(np.float32)
    valid = rng.random((3, 4, 5)) > 0.2
    stats = segment_stats(labels, data, 3, valid=valid)
    counted = (labels >= 0) & valid
    for s in stats:
        values = data[counted & (labels == s["label"])].astype(float)
        assert s["pixels"] == values.size
        assert s["share"] == pytest.approx(values.size / counted.sum())
        assert s["mean"] == pytest.approx([values.mean()])
        assert s["std"] == pytest.approx([values.std()], abs=1e-9)


def test_segment_stats_large_offset_keeps_precision():
    rng = np.random.default_rng(0)
    data = 1e6 + rng.normal(0.0, 1e-3, size=(50, 40))
    labels = np.zeros(data.shape, dtype=np.int32)
    (stat,) = segment_stats(labels, data, 1)
    assert stat["std"][0] == pytest.approx(data.std(), rel=1e-6)
    assert stat["mean"][0] == pytest.approx(data.mean(), rel=1e-12)


def test_segment_stats_nan_handling():
    labels = np.array([[0, -1]], dtype=np.int32)
    data = np.array([[1.0, np.nan]])
    assert segment_stats(labels, data, 1)[0]["mean"] == [1.0]
    with pytest.raises(ValueError, match="non-finite"):
        segment_stats(np.array([[0, 0]]), data, 1)
    valid = np.array([[True, False]])
    assert segment_stats(np.array([[0, 0]]), data, 1, valid=valid)[0]["mean"] == [1.0]


def test_segment_stats_errors():
    labels = np.array([[0, 1]], dtype=np.int32)
    with pytest.raises(ValueError, match="n_components"):
        segment_stats(labels, np.zeros((1, 2, 1)), 1)
    with pytest.raises(ValueError, match="data must have shape"):
        segment_stats(labels, np.zeros((2, 2, 1)), 2)
    with pytest.raises(TypeError, match="n_components"):
        segment_stats(labels, np.zeros((1, 2, 1)), 2.0)


# --- region hierarchy ------------------------------------------------------------


def _four_squares():
    """Labels: 0 background, 1 in two separate squares; values: the right square darker."""
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15] = labels[25:35, 25:35] = 1
    values = np.where(labels == 1, 100.0, 0.0).astype(np.float32)
    values[25:35, 25:35] = 60.0
    values[:, 20:] += 5.0           # the background a little lighter on the right
    labels[:, 20:][labels[:, 20:] == 0] = 2
    return labels, values


def test_regions_are_connected_and_merge_most_alike_first():
    labels, values = _four_squares()
    h = region_hierarchy(labels, values, min_size=0)
    # Four connected regions: left background, right background, two squares.
    assert h.n_regions == 4 and h.min_regions == 1
    finest = h.cut(10)                        # more than exist: all of them
    assert len(np.unique(finest)) == 4
    for r in range(4):
        _, n_parts = ndi.label(finest == r)
        assert n_parts == 1
    # First the two background halves (5 apart) ...
    three = h.cut(3)
    assert three[0, 0] == three[0, 39] and len(np.unique(three)) == 3
    # ... then the darker square (60), closer to the background than the other (100).
    two = h.cut(2)
    assert len(np.unique(two)) == 2
    assert two[30, 30] == two[0, 0] and two[10, 10] != two[0, 0]
    assert np.array_equal(h.cut(1), np.zeros_like(labels))
    # Every cut numbers its regions in raster order of their first pixel.
    for cut in (finest, three, two):
        _, first = np.unique(cut.ravel(), return_index=True)
        assert np.all(np.diff(first) > 0)


def test_regions_of_one_texture_merge_before_a_flat_one_of_the_same_mean():
    # Three strips of one mean colour: two of them grainy, one flat.  Means
    # alone (Ward's criterion) cannot tell them apart; their spread can.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3, dtype=np.int32), 20)[np.newaxis].repeat(30, axis=0)
    values = np.full(labels.shape + (3,), 100.0)
    for strip in (1, 2):                                # 0 stays flat
        grain = rng.normal(0, 20, (int((labels == strip).sum()), 3))
        values[labels == strip] += grain - grain.mean(axis=0)   # the same mean
    h = region_hierarchy(labels, values, min_size=0, boundary_weight=0)
    # (Equal means cost Ward nothing, and its ties go to the lowest ids: 0, 1.)
    assert h.merges[0].tolist() == [1, 2]
    two = h.cut(2)
    assert two[0, 25] == two[0, 45] != two[0, 0]
    # A flat region (no spread) costs no infinite or NaN merge.
    assert np.all(np.isfinite(h.costs)) and np.all(h.costs >= 0)


def test_nearly_constant_channels_do_not_steer_the_merges():
    # a* and b* of a grey photo stored as RGB are rounding noise; a constant
    # channel has none: neither may change the regions.
    from pathlib import Path

    from gmmseg import segment
    from gmmseg.features import lab
    from gmmseg.io import read_image
    photo = read_image(Path(__file__).resolve().parents[1] / "sample_images" / "coffee.png")
    grey = photo.data.mean(axis=2).astype(np.uint8)
    labels = segment(np.dstack([grey] * 3), 6).labels
    colour = lab(np.dstack([grey] * 3))
    assert 0 < colour[..., 1:].var() < 1e-3              # the rounding noise
    alone = region_hierarchy(labels, colour[..., :1])
    noisy = region_hierarchy(labels, colour)
    assert adjusted_rand_score(noisy.cut(scale=0.005).ravel(),
                               alone.cut(scale=0.005).ravel()) > 0.99
    flat = np.dstack([colour[..., :1], np.full(labels.shape + (2,), 177.0, np.float32)])
    constant = region_hierarchy(labels, flat)
    # The same merges in the same order (which of two tied regions keeps its
    # id may differ, so compare every level of the hierarchy).
    for n in range(1, alone.n_regions + 1):
        np.testing.assert_array_equal(constant.cut(n), alone.cut(n))
    np.testing.assert_allclose(constant.scales, alone.scales, rtol=1e-6)


def test_region_hierarchy_keeps_invalid_pixels_out_and_parts_apart():
    labels, values = _four_squares()
    labels[:, 19:21] = -1                     # a wall of invalid pixels
    h = region_hierarchy(labels, values, min_size=0)
    cut = h.cut(1)
    assert np.all(cut[:, 19:21] == -1)
    # Left and right halves cannot merge across the wall.
    assert h.min_regions == 2 and len(np.unique(cut[cut >= 0])) == 2
    assert cut[0, 0] != cut[0, 39]


def test_isolated_specks_get_no_region():
    labels, values = _four_squares()
    labels[0:3, 36:39] = -1
    labels[1, 37] = 1                          # one pixel walled in by invalid pixels
    h = region_hierarchy(labels, values, min_size=5)
    assert h.regions[1, 37] == -1 and h.n_regions == 4 and h.min_regions == 1
    assert len(np.unique(h.cut(2))) == 3       # -1 and two regions
    with pytest.raises(ValueError, match="spacing"):
        region_hierarchy(labels, values, spacing=(1.0, 0.0))


def test_region_hierarchy_small_pieces_and_volumes():
    rng = np.random.default_rng(0)
    labels = np.zeros((30, 30), np.int32)
    labels[rng.random((30, 30)) < 0.02] = 1   # specks
    labels[10:20, 10:20] = 1
    values = labels.astype(np.float32) * 50
    h = region_hierarchy(labels, values, min_size=5)
    assert h.n_regions == 2                   # the specks joined the background
    vol = np.zeros((6, 12, 12), np.int32)
    vol[:, 3:9, 3:9] = 1
    vol[2:4, 5:7, 5:7] = 2
    h3 = region_hierarchy(vol, vol * 10.0, min_size=0)
    assert h3.n_regions == 3 and h3.cut(3).shape == vol.shape
    with pytest.raises(ValueError, match="values must have shape"):
        region_hierarchy(vol, np.zeros((6, 12)))


def test_cut_at_a_scale():
    labels, values = _four_squares()
    h = region_hierarchy(labels, values, min_size=0, boundary_weight=0)
    assert np.all(np.diff(h.scales) >= 0) and len(h.scales) == len(h.merges)
    # Relative to the costliest merge.
    assert h.scales[-1] == 1.0 and h.scales[np.argmax(h.costs)] == 1.0
    # A cut at a scale makes exactly the merges up to that scale.
    for s in np.unique(h.scales):
        for at in (s, np.nextafter(s, 0)):
            assert len(np.unique(h.cut(scale=at))) == h.n_regions - np.sum(h.scales <= at)
    assert len(np.unique(h.cut(scale=1.0))) == h.min_regions
    counts = [len(np.unique(h.cut(scale=s))) for s in (0.0, 0.001, 0.01, 0.1, 1.0)]
    assert counts == sorted(counts, reverse=True) and counts[0] == h.n_regions
    # Scales are relative: the same picture at twice the resolution, or with
    # its values in other units, cuts alike.
    big = region_hierarchy(np.kron(labels, np.ones((2, 2), labels.dtype)),
                           np.kron(values, np.ones((2, 2), values.dtype)), min_size=0,
                           boundary_weight=0)
    np.testing.assert_allclose(big.scales, h.scales)
    units = region_hierarchy(labels, values * 7.0 - 3.0, min_size=0, boundary_weight=4)
    edges = region_hierarchy(labels, values, min_size=0, boundary_weight=4)
    np.testing.assert_array_equal(units.merges, edges.merges)
    np.testing.assert_allclose(units.scales, edges.scales, rtol=1e-5)
    for bad in ({}, {"n_regions": 2, "scale": 1.0}):
        with pytest.raises(ValueError, match="either n_regions or scale"):
            h.cut(**bad)
    for bad in (-1.0, 1.5, 100.0, np.inf, np.nan):   # 100: the scale before it was a share
        with pytest.raises(ValueError, match=r"scale must be a number in \[0, 1\]"):
            h.cut(scale=bad)


def test_opencv_region_labelling_matches_scikit_image():
    from skimage import measure

    from gmmseg.postprocess._graph import _label_regions

    rng = np.random.default_rng(0)
    for trial in range(30):
        k = int(rng.integers(1, 12))
        labels = ndi.zoom(rng.integers(0, k, (20, 25)), int(rng.integers(1, 5)), order=0)
        labels = labels.astype(np.int32)
        labels[rng.random(labels.shape) < 0.05] = -1
        for connectivity in (1, 2):
            regions, region_label = _label_regions(labels, connectivity)
            expected, n = measure.label(labels, background=-1, connectivity=connectivity,
                                        return_num=True)
            assert np.array_equal(regions, expected), (trial, connectivity)
            assert len(region_label) == n + 1
            assert np.array_equal(region_label[expected], np.where(expected > 0, labels, -1))


def test_many_small_pieces_same_with_opencv_and_scikit_image(monkeypatch):
    # Over 46,341 pieces: their pair codes overflow int32, so region ids must be wider.
    labels = np.random.default_rng(0).integers(0, 8, (300, 300)).astype(np.int32)
    fast = remove_small_regions(labels, 20)
    monkeypatch.setattr(_graph, "USE_COMPILED", False)
    np.testing.assert_array_equal(fast, remove_small_regions(labels, 20))
    monkeypatch.setattr(_graph, "_OPENCV_MAX_LABELS", 0)
    np.testing.assert_array_equal(fast, remove_small_regions(labels, 20))


def random_label_maps(seed=0, n=12):
    """Blocky 2-D label maps of 1-11 labels with scattered invalid (-1) pixels,
    and one of pure noise: many one-pixel regions and corner contacts."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        k = int(rng.integers(1, 12))
        labels = ndi.zoom(rng.integers(0, k, (21, 26)), int(rng.integers(1, 5)), order=0)
        labels = labels.astype(np.int32)
        labels[rng.random(labels.shape) < 0.05] = -1
        yield labels
    yield rng.integers(-1, 3, (57, 63)).astype(np.int32)


@pytest.fixture
def both_paths(monkeypatch):
    """``run(fn)``: ``fn()`` with the compiled region code, then with NumPy / OpenCV."""
    pytest.importorskip("numba")

    def run(fn):
        monkeypatch.setattr(_graph, "USE_COMPILED", True)
        compiled = fn()
        monkeypatch.setattr(_graph, "USE_COMPILED", False)
        return compiled, fn()
    return run


@pytest.mark.parametrize("connectivity", [1, 2])
def test_compiled_region_labelling_equals_opencv_and_scikit_image(both_paths, connectivity):
    from skimage import measure

    for labels in random_label_maps():
        (regions, region_label), (expected, expected_label) = both_paths(
            lambda: _graph._label_regions(labels, connectivity))
        np.testing.assert_array_equal(regions, expected)
        np.testing.assert_array_equal(region_label, expected_label)
        reference = measure.label(labels, background=-1, connectivity=connectivity)
        np.testing.assert_array_equal(regions, reference)
    unsigned = np.array([[0, 0, 1], [2, 2, 1]], dtype=np.uint8)   # no -1 possible
    (regions, region_label), _ = both_paths(lambda: _graph._label_regions(unsigned, 1))
    np.testing.assert_array_equal(regions, [[1, 1, 2], [3, 3, 2]])
    np.testing.assert_array_equal(region_label, [-1, 0, 1, 2])


def test_compiled_neighbour_pairs_equal_numpy(both_paths):
    for labels in random_label_maps(seed=1):
        compiled, numpy_ = both_paths(lambda: list(_graph._neighbour_pairs(labels)))
        assert len(compiled) == len(numpy_) == 4
        for (ia, ib), (ja, jb) in zip(compiled, numpy_):
            np.testing.assert_array_equal(ia, ja)
            np.testing.assert_array_equal(ib, jb)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_compiled_small_region_cleanup_and_hierarchy_equal_numpy(both_paths, connectivity):
    rng = np.random.default_rng(2)
    for labels in random_label_maps(seed=2, n=6):
        values = rng.normal(size=labels.shape + (3,)).astype(np.float32)
        values += labels[..., None]
        compiled, numpy_ = both_paths(lambda: remove_small_regions(labels, 6, connectivity=connectivity))
        np.testing.assert_array_equal(compiled, numpy_)
        valid = np.maximum(labels, 0)
        compiled, numpy_ = both_paths(lambda: region_hierarchy(valid, values, min_size=6))
        np.testing.assert_array_equal(compiled.regions, numpy_.regions)
        np.testing.assert_array_equal(compiled.merges, numpy_.merges)
        np.testing.assert_allclose(compiled.costs, numpy_.costs, rtol=1e-9)
        np.testing.assert_array_equal(compiled.cut(3)[0], numpy_.cut(3)[0])


def test_region_hierarchy_of_an_empty_map():
    h = region_hierarchy(np.zeros((0, 5), np.int32), np.zeros((0, 5, 3)))
    assert h.n_regions == 0 and h.cut(scale=1.0).shape == (0, 5)


def test_cut_at_a_scale_drops_specks():
    labels = np.zeros((60, 60), np.int32)
    labels[:, 30:] = 1
    labels[10:13, 10:13] = 2                   # 9 pixels: 0.25% of the image
    values = np.choose(labels, [0.0, 40.0, 1000.0]).astype(np.float32)
    h = region_hierarchy(labels, values, min_size=0)
    kept = h.cut(scale=0.0, min_share=0)
    assert len(np.unique(kept)) == 3 and kept[11, 11] != kept[0, 0]
    cut = h.cut(scale=0.0)                     # default: regions under 1% join a neighbour
    assert len(np.unique(cut)) == 2 and cut[11, 11] == cut[0, 0] != cut[0, 59]
    assert np.array_equal(h.cut(3), kept)      # a number of regions is taken as asked
    with pytest.raises(ValueError, match="min_share"):
        h.cut(scale=1.0, min_share=1.5)


def test_cut_at_a_scale_leaves_no_small_region_with_a_neighbour():
    rng = np.random.default_rng(3)
    for trial in range(5):
        labels = ndi.zoom(rng.integers(0, 6, (12, 12)), 5, order=0).astype(np.int32)
        labels[rng.random(labels.shape) < 0.01] = -1
        values = rng.normal(size=labels.shape + (3,)).astype(np.float32) + labels[..., None]
        h = region_hierarchy(labels, values, min_size=0)
        for share in (0.01, 0.05):
            cut = h.cut(scale=0.0, min_share=share)
            smallest = int(share * np.count_nonzero(labels >= 0))
            sizes = np.bincount(cut[cut >= 0])
            pairs = _graph._touching_pairs(cut)
            has_neighbour = np.zeros(len(sizes), bool)
            has_neighbour[pairs.ravel()] = True
            assert np.all(sizes[has_neighbour] >= smallest), (trial, share)
            assert np.array_equal(np.unique(cut[cut >= 0]), np.arange(len(sizes)))


def test_small_region_cleanup_tracks_its_regions_without_relabelling():
    # Each pass works out the cleaned map's regions on the region graph; they
    # must be what labelling the cleaned map gives (same ids: raster order).
    from gmmseg.postprocess._graph import _label_regions
    from gmmseg.postprocess.labels import _remove_small

    rng = np.random.default_rng(5)
    for trial in range(40):
        shape = [(30, 40), (5, 12, 14)][trial % 2]
        labels = rng.integers(0, 2 + trial % 5, size=shape).astype([np.int32, np.uint8][trial % 2])
        if labels.dtype.kind == "i":
            labels[rng.random(shape) < 0.1] = -1
        for connectivity in range(1, labels.ndim + 1):
            for min_size in (3, 12):
                found, region_label = _remove_small(labels, min_size, connectivity)
                regions = found.paint(np.arange(len(region_label), dtype=np.int32))
                cleaned = remove_small_regions(labels, min_size, connectivity=connectivity)
                expected, expected_label = _label_regions(cleaned, connectivity)
                np.testing.assert_array_equal(regions, expected)
                np.testing.assert_array_equal(region_label, expected_label)


def test_overlay_with_more_than_255_labels():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    labels = rng.integers(-1, 400, (20, 30))
    colors = rng.integers(0, 256, (400, 3))
    out = overlay(rgb, labels, alpha=0.3, boundaries=False, colors=colors)
    expected = 0.7 * rgb + np.where(labels[..., None] >= 0, 0.3 * colors[labels], 0)
    np.testing.assert_allclose(out, np.rint(expected), atol=1)


def test_squared_gradient_of_any_number_of_channels():
    from gmmseg.postprocess.regions import _squared_gradient

    rng = np.random.default_rng(1)
    spacing = np.array([1.0, 2.0])
    for channels in (1, 3, 6, 130):     # OpenCV filters at most 128 channels at once
        values = rng.random((15, 18, channels)).astype(np.float32)
        expected = np.zeros((15, 18))
        for c in range(channels):
            smooth = ndi.gaussian_filter(values[..., c].astype(float), sigma=1 / spacing,
                                         mode="nearest", truncate=4.0)
            for derivative in np.gradient(np.pad(smooth, 1, mode="edge"), *spacing):
                expected += derivative[1:-1, 1:-1] ** 2
        got = _squared_gradient(values, spacing)
        assert got.shape == (15, 18) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0.02, atol=1e-3)


def test_odd_shapes_and_unsigned_labels_from_review():
    # A (4, 1) map once crashed OpenCV's scalar handling in the labelling.
    column = np.array([[0], [1], [1], [0]], np.int32)
    np.testing.assert_array_equal(remove_small_regions(column, 2), [[1], [1], [1], [1]])
    h = region_hierarchy(column, column.astype(float), min_size=0)
    assert h.n_regions == 3 and h.cut(1).tolist() == [[0], [0], [0], [0]]
    # Unsigned labels with left-out pixels: -1 must not wrap to 255.
    stats = segment_stats(np.array([[0, 1]], np.uint8), [[1.0, 5.0]], 256,
                          valid=np.array([[True, False]]))
    assert (stats[0]["pixels"], stats[0]["mean"]) == (1, [1.0])
    assert stats[1]["pixels"] == 0 and stats[255]["pixels"] == 0
    # Label 255 of a uint8 map gets its colour, not the invalid pixels' black.
    colors = np.zeros((256, 3), np.uint8)
    colors[255] = (200, 0, 0)
    rgb = np.full((1, 2, 3), 100, np.uint8)
    out = overlay(rgb, np.array([[0, 255]], np.uint8), alpha=1.0, boundaries=False,
                  colors=colors)
    np.testing.assert_array_equal(out[0, 1], [200, 0, 0])


def test_region_hierarchy_of_a_volume_with_a_single_slice():
    # np.gradient needs two samples per axis: a one-slice volume has no change along it.
    labels = np.zeros((1, 6, 8), np.int32)
    labels[0, :, 4:] = 1
    h = region_hierarchy(labels, labels.astype(float), min_size=0)
    assert h.n_regions == 2
    np.testing.assert_array_equal(h.cut(2), labels)


def test_pixel_counts_match_bincount():
    rng = np.random.default_rng(3)
    for shape in [(40, 50), (3, 9, 11), (1, 1), (7, 1)]:
        labels = rng.integers(-1, 6, size=shape).astype(np.int32)
        labels[tuple(rng.integers(0, n, 4) for n in shape)] = -1
        expected = np.bincount(labels[labels >= 0], minlength=int(labels.max()) + 1)
        counts = postprocess.pixel_counts(labels)
        assert counts.dtype == np.int64 and counts.tolist() == expected.tolist()
        assert postprocess.pixel_counts(labels.astype(np.int16), 9).tolist() == (
            expected.tolist() + [0] * (9 - len(expected)))
    assert postprocess.pixel_counts(np.full((3, 3), -1)).tolist() == []
    assert postprocess.pixel_counts(np.array([[0, 300]], np.uint16))[[0, 300]].tolist() == [1, 1]
    with pytest.raises(ValueError, match="below n"):
        postprocess.pixel_counts(np.array([[0, 4]]), 3)


# --- region modes ------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("auto", "auto"), ("scale", "scale"), (" Auto ", "auto"), ("SCALE", "scale"),
    ("off", None), ("Off", None), ("none", None), (None, None), (False, None),
    (1, 1), (12, 12), (np.int64(7), 7),
])
def test_check_region_mode_normalises_what_it_accepts(value, expected):
    mode = check_region_mode(value)
    assert mode == expected and type(mode) is type(expected)


@pytest.mark.parametrize("bad", [
    0, -3,                          # numbers of regions below 1
    True, np.True_,                 # bools are not numbers of regions
    2.5, 3.0, np.float64(2),        # floats, even whole ones
    "3", "0", "-1",                 # strings of digits: the CLI converts those
    "many", "", "auto scale",       # other words
    ["auto"], object(),             # other types
])
def test_check_region_mode_rejects_with_a_message_naming_the_parameter(bad):
    expected = ("regions must be 'auto', 'scale', 'off', None or a number of regions >= 1, "
                f"got {bad!r}")
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_region_mode(bad)
    with pytest.raises(ValueError, match=r"^--regions must be .*, got "):
        check_region_mode(bad, "--regions")


# --- keys on pictures: colour bars, legends ----------------------------------------------


def test_nice_ticks_are_round_and_inside_the_range():
    assert postprocess.nice_ticks(0.0, 1.0) == ([0.0, 0.25, 0.5, 0.75, 1.0], 2)
    assert postprocess.nice_ticks(3.47, 11.9) == ([4.0, 6.0, 8.0, 10.0], 0)
    ticks, decimals = postprocess.nice_ticks(-1234.0, 56789.0)
    assert ticks[0] >= -1234 and ticks[-1] <= 56789 and decimals == 0
    assert all(t % 10000 == 0 for t in ticks) and 4 <= len(ticks) <= 7
    with pytest.raises(ValueError, match="low < high"):
        postprocess.nice_ticks(2.0, 2.0)


def test_colorbar_shows_the_colormap_left_to_right_with_text_under_it():
    table = postprocess.colormap("viridis")
    strip = postprocess.colorbar(600, (0.0, 1.0), cmap="viridis", label="entropy (0 .. 1)")
    assert strip.dtype == np.uint8 and strip.shape[1] == 600 and strip.ndim == 3
    # The bar: the row of pixels most like the colour map's ends, inside the frame.
    rows = np.flatnonzero((np.abs(strip.astype(int) - table[0].astype(int)).sum(-1) < 10)
                          .any(axis=1))
    bar = strip[rows[len(rows) // 2]]
    inside = np.flatnonzero((bar != 255).any(-1))
    left, right = bar[inside[1]], bar[inside[-2]]
    assert np.abs(left.astype(int) - table[0]).max() <= 3
    assert np.abs(right.astype(int) - table[255]).max() <= 3
    # Tick values and the caption: dark ink below the bar, on the white strip.
    below = strip[rows.max() + 1:]
    assert (below.sum(-1) < 200).sum() > 200
    # A wider strip (a large picture shown shrunk) gets larger text.
    assert postprocess.colorbar(3000, (0.0, 1.0)).shape[0] > strip.shape[0]
    with pytest.raises(ValueError, match="low < high"):
        postprocess.colorbar(600, (1.0, 1.0))


def test_legend_has_a_swatch_of_every_colour_and_wraps_to_its_width():
    colors = postprocess.segment_colors(6)
    names = [f"segment {k} (a fairly long name)" for k in range(6)]
    wide = postprocess.legend(2000, colors, names, scale=0.5)
    narrow = postprocess.legend(400, colors, names, scale=0.5)
    assert wide.shape[1] == 2000 and narrow.shape[1] == 400
    assert narrow.shape[0] > wide.shape[0]  # more rows
    for strip in (wide, narrow):
        for rgb in colors:
            assert (strip == rgb).all(-1).sum() > 20
    with pytest.raises(ValueError, match="name every colour"):
        postprocess.legend(400, colors, names[:2])


def test_stack_centres_pictures_on_one_canvas():
    a = np.full((2, 4, 3), 7, np.uint8)
    b = np.full((3, 2, 3), 9, np.uint8)
    out = postprocess.stack(a, b, background=(1, 2, 3))
    assert out.shape == (5, 4, 3)
    np.testing.assert_array_equal(out[:2], a)
    np.testing.assert_array_equal(out[2:, 1:3], b[:, :, :])
    np.testing.assert_array_equal(out[2:, 0], [[1, 2, 3]] * 3)


# --- volume montages ---------------------------------------------------------------------


def test_montage_slices_are_evenly_spaced_and_thin_stacks_show_their_own_plane():
    assert postprocess.montage_slices((25, 41, 33), n_slices=3) == [
        (0, [6, 12, 18]), (1, [10, 20, 30]), (2, [8, 16, 24])]
    # Fewer voxels than slices asked for: every slice once.
    assert postprocess.montage_slices((4, 50, 60), n_slices=6) == [(0, [0, 1, 2, 3])]
    # An axis under 8 voxels: only the plane across it (here axis 2), wherever it is.
    assert postprocess.montage_slices((64, 64, 3)) == [(2, [0, 1, 2])]
    assert [a for a, _ in postprocess.montage_slices((64, 64, 3), planes="all")] == [0, 1, 2]
    assert postprocess.montage_slices((10, 10, 10), n_slices=1, planes=1) == [(1, [4])]
    with pytest.raises(ValueError, match="planes"):
        postprocess.montage_slices((10, 10, 10), planes=3)


def test_volume_montage_draws_every_tile_at_one_physical_scale():
    shape, spacing = (20, 30, 40), (3.0, 1.0, 0.5)  # mm: 60 x 30 x 20
    asked = []

    def render(axis, index, size):
        asked.append((axis, index, size))
        tile = np.zeros(size + (3,), np.uint8)
        tile[..., axis] = 255  # red, green, blue: no text pixel has these colours
        return tile

    picture = postprocess.volume_montage(render, shape, spacing=spacing, n_slices=2,
                                         tile_size=240, caption=lambda a, i: f"{a}:{i}")
    sizes = {axis: size for axis, _, size in asked}
    assert sorted({(a, i) for a, i, _ in asked}) == [
        (0, 6), (0, 13), (1, 10), (1, 19), (2, 13), (2, 26)]
    # Pixels per mm equal in every tile and both directions: the largest extent,
    # 60 mm (axis 0), is 240 px, so 4 px per mm.
    assert sizes[0] == (30 * 4, 20 * 4)     # rows: axis 1 (30 mm), columns: axis 2 (20 mm)
    assert sizes[1] == (60 * 4, 20 * 4)     # rows: axis 0 (60 mm)
    assert sizes[2] == (60 * 4, 30 * 4)
    # Each tile is on the canvas, in its row, below its caption.
    for axis in range(3):
        colour = np.eye(3, dtype=np.uint8)[axis] * 255
        assert (picture == colour).all(-1).sum() == 2 * np.prod(sizes[axis])
    assert picture.shape[1] >= 2 * 120 and picture.shape[0] > 120 + 240 + 240
    with pytest.raises(ValueError, match="render must return"):
        postprocess.volume_montage(lambda a, i, s: np.zeros((2, 2, 3), np.uint8), shape)


def test_resize_nearest_keeps_labels_and_display_ranges_match_slices():
    labels = np.array([[0, 1], [2, -1]], np.int32)
    big = postprocess.resize_nearest(labels, (4, 6))
    np.testing.assert_array_equal(big, np.repeat(np.repeat(labels, 2, 0), 3, 1))
    # A stretch over the whole volume shows equal values alike in every slice.
    volume = np.zeros((2, 8, 8, 1), np.uint16)
    volume[0] = 100
    volume[1, :4] = 1000
    volume[1, 4:] = 100
    ranges = postprocess.display_ranges(volume, percentiles=(0, 100))
    assert ranges == [(100.0, 1000.0)]
    first = display_rgb(volume[0], value_ranges=ranges)
    second = display_rgb(volume[1], value_ranges=ranges)
    assert first[0, 0, 0] == second[7, 0, 0] == 0 and second[0, 0, 0] == 255
    assert postprocess.display_ranges(np.zeros((3, 4, 4, 3), np.uint8)) == [None] * 3
    with pytest.raises(ValueError, match="one range per shown channel"):
        display_rgb(volume[0], value_ranges=[(0, 1), (0, 1), (0, 1)])
    with pytest.raises(ValueError, match="low < high"):
        display_rgb(volume[0], value_ranges=[(5, 5)])


def test_percentile_range_over_a_volume_ignores_invalid_and_non_finite_values():
    values = np.arange(1000, dtype=np.float64).reshape(10, 10, 10)
    valid = values < 500
    values[0, 0, 1] = np.nan
    low, high = postprocess.percentile_range(values, valid, percentiles=(0, 100))
    assert (low, high) == (0.0, 499.0)


def test_segment_stats_of_uint8_data_match_the_general_path():
    rng = np.random.default_rng(3)
    labels = rng.integers(-1, 4, (37, 23)).astype(np.int32)
    labels[labels == 2] = 1                     # an empty label keeps its None entries
    data = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    valid = rng.random((37, 23)) > 0.2
    for mask in (None, valid):
        fast = segment_stats(labels, data, 5, valid=mask)
        general = segment_stats(labels, data.astype(np.float64), 5, valid=mask)
        assert fast == general                  # the same numbers, not just close
        assert fast[2]["pixels"] == 0 and fast[2]["mean"] is None
    grey = segment_stats(labels[None], data[None, ..., 0], 4)     # a volume, one channel
    assert grey == segment_stats(labels[None], data[None, ..., 0].astype(np.int64), 4)


def test_overlay_blocks_match_the_whole_picture_formula(small_blocks):
    import cv2
    rng = np.random.default_rng(4)
    labels = rng.integers(-1, 3, (9, 11)).astype(np.int32)
    labels[:, 6:] = 2                           # runs and borders
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    colors = segment_colors(3)
    tint = np.zeros((9, 11, 3), np.uint8)
    tint[labels >= 0] = colors[labels[labels >= 0]]
    expected = cv2.addWeighted(rgb, 0.6, tint, 0.4, 0.0)
    expected[boundaries(labels)] = (255, 255, 255)
    np.testing.assert_array_equal(overlay(rgb, labels, alpha=0.4), expected)
    many = np.arange(9 * 11).reshape(9, 11) % 300      # beyond 255 labels: NumPy lookup
    plain = overlay(rgb, many, alpha=0.4, boundaries=False, colors=segment_colors(300))
    ref = cv2.addWeighted(rgb, 0.6, segment_colors(300)[many], 0.4, 0.0)
    np.testing.assert_array_equal(plain, ref)


def test_region_edges_on_a_second_thread_give_the_same_hierarchy(monkeypatch):
    from gmmseg.postprocess import regions as regions_module
    rng = np.random.default_rng(5)
    labels = (rng.random((40, 50)) * 3).astype(np.int32)
    labels = ndi.median_filter(labels, 5)
    values = rng.normal(size=(40, 50, 3)).astype(np.float32) + labels[..., None]
    threaded = region_hierarchy(labels, values, min_size=5)
    def inline(function, *args):
        value = function(*args)
        return lambda: value

    monkeypatch.setattr(regions_module, "_in_background", inline)
    inline = region_hierarchy(labels, values, min_size=5)
    np.testing.assert_array_equal(threaded.merges, inline.merges)
    np.testing.assert_array_equal(threaded.costs, inline.costs)

    def failing(*args):
        raise RuntimeError("edge failure")

    monkeypatch.undo()
    monkeypatch.setattr(regions_module, "_edge_strength", failing)
    with pytest.raises(RuntimeError, match="edge failure"):   # handed to the caller
        region_hierarchy(labels, values, min_size=5)


def test_squared_gradient_does_not_depend_on_its_stripes(monkeypatch):
    from gmmseg.postprocess import regions

    rng = np.random.default_rng(4)
    for channels, spacing in ((3, (1.0, 1.0)), (5, (1.0, 2.5)), (1, (3.0, 1.0))):
        values = rng.random((97, 31, channels)).astype(np.float32)
        whole = regions._squared_gradient(values, np.array(spacing))
        monkeypatch.setattr(regions, "_GRADIENT_STRIPE_VALUES", 1)   # stripes of 4 halos
        striped = regions._squared_gradient(values, np.array(spacing))
        monkeypatch.undo()
        np.testing.assert_allclose(striped, whole, rtol=1e-6, atol=1e-7)


def test_speckled_and_blocky_maps_clean_the_same_as_runs_or_pixels(both_paths, monkeypatch):
    """A map of short runs is cleaned as pixels, of long runs as runs: either
    form gives the same map, and so does the NumPy path."""
    rng = np.random.default_rng(6)
    for zoom in (1, 2, 5):
        labels = ndi.zoom(rng.integers(0, 5, (60 // zoom, 70 // zoom)), zoom, order=0)
        labels = labels.astype(np.int32)
        labels[rng.random(labels.shape) < 0.02] = -1
        results = []
        for shortest in (0, 10 ** 9):
            monkeypatch.setattr(_graph, "_SHORTEST_MEAN_RUN", shortest)
            results += both_paths(lambda: remove_small_regions(labels, 7, connectivity=2))
        for other in results[1:]:
            np.testing.assert_array_equal(other, results[0])


def test_wide_unsigned_labels_keep_their_values(both_paths):
    labels = np.zeros((4, 6), ">u4")        # not the native byte order
    labels[:, 3:] = 2 ** 31 + 5
    labels[1, 1] = 2 ** 31 + 5
    compiled, numpy_ = both_paths(lambda: remove_small_regions(labels, 3))
    np.testing.assert_array_equal(compiled, numpy_)
    assert compiled[1, 1] == 0 and compiled[0, 5] == 2 ** 31 + 5
