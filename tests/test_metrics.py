"""Region metrics (gmmseg.metrics): hand-computed cases, brute force, skimage."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error
from skimage.metrics import variation_of_information as sk_variation_of_information

from gmmseg.metrics import (
    contingency,
    mean_variation_of_information,
    probabilistic_rand_index,
    rand_index,
    region_metrics,
    segmentation_covering,
    variation_of_information,
)

# seg = {0,1} {2,3}; gt = {0,1,2} {3}.  Pairs: (0,1) (0,3) (1,3) agree, the
# other three do not.  H(gt|seg) = 1/2 bit (the region {2,3} is split
# evenly), H(seg|gt) = 3/4 H(2/3, 1/3) = 3/4 log2 3 - 1/2 bit.  Covering of
# gt: {0,1,2} best IoU 2/3 (with {0,1}), {3} best IoU 1/2 (with {2,3}).
SEG = np.array([[0, 0], [1, 1]])
GT = np.array([[0, 0], [0, 1]])


def brute_force(seg, gt):
    """RI, VoI and covering of gt by seg from pixel pairs and region sets."""
    seg, gt = seg.ravel(), gt.ravel()
    n = seg.size
    agree = sum((seg[i] == seg[j]) == (gt[i] == gt[j]) for i, j in itertools.combinations(range(n), 2))
    ri = agree / (n * (n - 1) / 2)

    def entropy(labels):
        return -sum(c / n * math.log(c / n) for c in Counter(labels).values())

    joint = entropy(list(zip(seg.tolist(), gt.tolist())))
    voi = 2 * joint - entropy(seg.tolist()) - entropy(gt.tolist())

    covered = 0.0
    for g in np.unique(gt):
        region = set(np.flatnonzero(gt == g))
        best = max(len(region & set(np.flatnonzero(seg == s))) / len(region | set(np.flatnonzero(seg == s)))
                   for s in np.unique(seg))
        covered += len(region) * best
    return ri, voi / math.log(2), covered / n


def test_contingency_counts_pairs_and_drops_ignored_pixels():
    table = contingency(np.array([0, 0, 1, -1, 7]), np.array([3, 4, 4, 4, -1]))
    np.testing.assert_array_equal(table.toarray(), [[1, 1], [0, 1]])
    assert table.dtype == np.int64


def test_contingency_uses_unique_codes_for_many_labels():
    # 50 x 50 labels on 100 pixels: more cells than the dense path allows.
    a = np.arange(100) % 50
    b = np.arange(100) // 2
    table = contingency(a, b)
    assert table.shape == (50, 50)
    assert table.sum() == 100
    np.testing.assert_array_equal(table.sum(axis=1), np.full(50, 2))


def test_hand_computed_case():
    assert rand_index(SEG, GT) == pytest.approx(0.5)
    assert variation_of_information(SEG, GT) == pytest.approx(0.75 * math.log2(3))
    assert variation_of_information(SEG, GT, base=math.e) == pytest.approx(0.75 * math.log(3))
    assert segmentation_covering(SEG, GT) == pytest.approx((3 * 2 / 3 + 1 * 1 / 2) / 4)
    # The other direction covers seg's regions: (2 * 2/3 + 2 * 1/2) / 4.
    assert segmentation_covering(GT, SEG) == pytest.approx((2 * 2 / 3 + 2 * 1 / 2) / 4)


def test_single_region_against_two_halves():
    one = np.zeros(4, int)
    halves = np.array([0, 0, 1, 1])
    assert rand_index(one, halves) == pytest.approx(2 / 6)
    assert variation_of_information(one, halves) == pytest.approx(1.0)   # one bit
    assert segmentation_covering(one, halves) == pytest.approx(0.5)   # each half: IoU 2/4
    assert segmentation_covering(halves, one) == pytest.approx(0.5)   # whole: IoU 2/4


def test_identical_partitions_are_perfect_whatever_the_labels():
    seg = np.array([[3, 3, 9], [9, -5, 3]])
    renamed = np.array([[0, 0, 1], [1, 2, 0]])
    m = region_metrics(seg, [renamed, seg])
    assert (m["pri"], m["voi"], m["covering"]) == (1.0, 0.0, 1.0)
    assert m["n_segments"] == 3


def test_annotators_are_averaged():
    gts = [GT, SEG]
    assert probabilistic_rand_index(SEG, gts) == pytest.approx((0.5 + 1.0) / 2)
    assert mean_variation_of_information(SEG, gts) == pytest.approx(0.75 * math.log2(3) / 2)
    assert segmentation_covering(SEG, gts) == pytest.approx((0.625 + 1.0) / 2)
    # A stacked (n_annotators, H, W) array is several annotators, not one map.
    assert segmentation_covering(SEG, np.stack(gts)) == pytest.approx((0.625 + 1.0) / 2)
    m = region_metrics(SEG, gts)
    assert m["covered_pixels"] == pytest.approx(2.5 + 4.0)
    assert m["gt_pixels"] == 8


def test_ignored_pixels_are_left_out():
    seg = np.array([0, 0, 1, 1, -1, 2])
    gt = np.array([0, 0, 0, 1, 5, -1])
    m = region_metrics(seg, [gt])
    expected = brute_force(seg[:4], gt[:4])
    assert (m["pri"], m["voi"], m["covering"]) == pytest.approx(expected)
    assert m["gt_pixels"] == 4
    # With ignore_label=None every label is a label.
    assert rand_index(seg, gt, ignore_label=None) == pytest.approx(brute_force(seg, gt)[0])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="shape"):
        rand_index(np.zeros((2, 2), int), np.zeros(4, int))
    with pytest.raises(ValueError, match="no pixel left"):
        rand_index(np.full(3, -1), np.zeros(3, int))
    with pytest.raises(ValueError, match="no ground-truth"):
        segmentation_covering(SEG, [])


@pytest.mark.parametrize("seed", range(20))
def test_random_cases_match_brute_force_and_label_permutations(seed):
    rng = np.random.default_rng(seed)
    shape = (5, 6)
    seg = rng.integers(0, rng.integers(1, 7), shape)
    gt = rng.integers(0, rng.integers(1, 7), shape)
    m = region_metrics(seg, [gt])
    assert (m["pri"], m["voi"], m["covering"]) == pytest.approx(brute_force(seg, gt))
    # Symmetric metrics are symmetric; permuting label values changes nothing.
    assert rand_index(gt, seg) == pytest.approx(m["pri"])
    assert variation_of_information(gt, seg) == pytest.approx(m["voi"])
    perm = rng.permutation(100) * 3 + 1000
    m2 = region_metrics(perm[seg], [perm[gt][::-1, ::-1][::-1, ::-1]])
    assert (m2["pri"], m2["voi"], m2["covering"]) == pytest.approx((m["pri"], m["voi"], m["covering"]))


@pytest.mark.parametrize("seed", range(5))
def test_variation_of_information_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 8, (40, 30))
    gt = rng.integers(1, 5, (40, 30))
    gt[:10] = 1
    h = sk_variation_of_information(seg, gt)
    assert variation_of_information(seg, gt) == pytest.approx(h.sum())


@pytest.mark.parametrize("seed", range(5))
def test_rand_index_matches_skimage_adapted_rand(seed):
    """skimage's adapted Rand precision/recall are ratios of same-segment pair
    counts; against a one-region map they give each map's own count, and
    from the three counts follows the Rand index."""
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 6, (30, 20))
    gt = rng.integers(0, 4, (30, 20))
    n = seg.size
    one = np.zeros_like(seg)

    def same_pairs_x2(labels):   # sum_i a_i^2 - N
        return adapted_rand_error(labels, one, ignore_labels=())[2] * n * (n - 1)

    _, precision, _ = adapted_rand_error(gt, seg, ignore_labels=())
    a2, b2 = same_pairs_x2(gt), same_pairs_x2(seg)
    both2 = precision * a2
    expected = 1 - (0.5 * (a2 + b2) - both2) / (n * (n - 1) / 2)
    assert rand_index(seg, gt) == pytest.approx(expected)


def _evaluate_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("evaluate_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluate_script_settings(tmp_path):
    evaluate = _evaluate_script()
    assert evaluate.parse_k("2..4,auto,8") == [2, 3, 4, "auto", 8]
    args = evaluate.parse_args(["--data", str(tmp_path), "--methods", "gmmseg",
                                "--k", "2,auto", "--gmmseg-options", "smoothing=1"])
    plan = evaluate.build_plan(args)
    assert list(plan) == ["gmmseg", "gmmseg -k auto", "gmmseg[smoothing=1]",
                          "gmmseg[smoothing=1] -k auto"]
    assert plan["gmmseg[smoothing=1] -k auto"][1] == [
        ("K=auto", {"smoothing": 1, "n_components": "auto"})]
    args = evaluate.parse_args(["--data", str(tmp_path), "--methods", "gmmseg", "--k", "3",
                                "--region-scales", "50,200", "--gmmseg-options", "regions=None"])
    plan = evaluate.build_plan(args)
    assert list(plan) == ["gmmseg", "gmmseg by region scale", "gmmseg[regions=None]"]
    assert [name for name, _ in plan["gmmseg by region scale"][1]] == [
        "K=3,scale=50", "K=3,scale=200"]
    # Default: the regions written for photos; regions=None: the labels.
    rng = np.random.default_rng(0)
    photo = np.zeros((40, 40, 3), np.uint8)
    photo[:, 20:] = (200, 40, 40)
    photo[10:18, 4:12] = (200, 40, 40)          # same colour as the right half, apart
    photo = np.clip(photo + rng.normal(0, 3, photo.shape), 0, 255).astype(np.uint8)
    evaluate._WORKER["segmentations"] = {}
    labels = evaluate.run_gmmseg(photo, {"n_components": 2, "regions": None})
    regions = evaluate.run_gmmseg(photo, {"n_components": 2})
    assert len(evaluate._WORKER["segmentations"]) == 1        # one segment() for both
    assert labels[14, 8] == labels[0, 30] and regions[14, 8] != regions[0, 30]
    (tmp_path / "images").mkdir()
    for name in ("3", "1", "2", "4"):
        (tmp_path / "images" / f"{name}.jpg").touch()
    assert evaluate.image_ids(tmp_path, limit=2, skip=1) == ["2", "3"]


def test_contingency_same_for_any_label_values():
    # Small non-negative labels take a bincount path, others np.unique: same table.
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, 500)
    b = rng.integers(0, 4, 500)
    table = contingency(a, b).toarray()
    for a2, b2 in ((a * 10**9, b), (a - 3, b + 2**40), (a.astype(np.uint8), b.astype(float))):
        np.testing.assert_array_equal(contingency(a2, b2, ignore_label=None).toarray(), table)
    assert table.sum() == 500 and table.shape == (6, 4)
