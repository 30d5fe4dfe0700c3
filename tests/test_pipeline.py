"""Tests of gmmseg.pipeline.segment and Segmentation on images with known answers."""

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import gmmseg
from gmmseg.errors import GmmsegError, OutputExistsError
from gmmseg import postprocess
from gmmseg.io import Image, read_image
from gmmseg.pipeline import segment

COLOURS = np.array([[20, 20, 20], [200, 40, 40], [40, 180, 60], [230, 230, 230]], np.uint8)


def quadrants(size=64, noise=12.0, seed=0):
    """An RGB image of four flat colour quadrants plus Gaussian noise, and its truth."""
    truth = np.zeros((size, size), np.int32)
    h = size // 2
    truth[:h, h:] = 1
    truth[h:, :h] = 2
    truth[h:, h:] = 3
    rng = np.random.default_rng(seed)
    img = COLOURS[truth].astype(np.float64) + rng.normal(0, noise, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8), truth


def ellipses(size=96, noise=0.06, seed=0):
    """A grey image with two nested ellipses of different brightness plus noise."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    truth = np.zeros((size, size), np.int32)
    truth[(xx / 0.45) ** 2 + (yy / 0.3) ** 2 < 1] = 1
    truth[(xx / 0.2) ** 2 + (yy / 0.12) ** 2 < 1] = 2
    levels = np.array([0.1, 0.5, 0.9])
    rng = np.random.default_rng(seed)
    return (levels[truth] + rng.normal(0, noise, truth.shape)).astype(np.float32), truth


def test_quadrants_are_recovered():
    img, truth = quadrants()
    seg = segment(img, 4, random_state=0)
    assert adjusted_rand_score(truth.ravel(), seg.labels.ravel()) >= 0.99
    assert seg.labels.dtype == np.int32 and seg.labels.shape == truth.shape


def test_noisy_ellipses_are_recovered():
    img, truth = ellipses()
    seg = segment(img, 3, random_state=0)
    assert adjusted_rand_score(truth.ravel(), seg.labels.ravel()) >= 0.99


def test_same_seed_gives_identical_labels_and_canonical_order():
    img, truth = quadrants(noise=25.0)
    a = segment(img, 4, random_state=3)
    b = segment(img, 4, random_state=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    # Canonical order: by the first feature (L*), darkest segment first.
    assert np.all(np.diff(a.model.means_[:, 0]) >= 0)
    mean_lightness = [img[a.labels == k].mean() for k in range(4)]
    assert a.labels[0, 0] == 0  # the dark quadrant
    assert np.argmax(mean_lightness) == 3
    # A different seed finds the same segments with the same label numbers.
    c = segment(img, 4, random_state=11)
    np.testing.assert_array_equal(a.labels, c.labels)


def test_outputs_are_consistent():
    img, _ = quadrants()
    seg = segment(img, 4, random_state=0)
    assert seg.proba.shape == img.shape[:2] + (4,) and seg.proba.dtype == np.float32
    np.testing.assert_allclose(seg.proba.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(seg.proba.argmax(-1), seg.labels)
    assert seg.log_likelihood.shape == img.shape[:2]
    assert np.isfinite(seg.log_likelihood).all()
    ov = seg.overlay()
    assert ov.shape == img.shape and ov.dtype == np.uint8
    stats = seg.stats()
    assert [s["pixels"] for s in stats] == [32 * 32] * 4
    np.testing.assert_allclose(stats[0]["mean"], COLOURS[0], atol=3)


def test_rgba_transparent_pixels_are_invalid_and_not_fitted():
    img, truth = quadrants()
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    rgba[:8, :8, :3] = [255, 0, 255]  # a colour that exists nowhere else ...
    rgba[:8, :8, 3] = 0  # ... but is transparent, so it must not become a segment
    seg = segment(Image(rgba[..., :3], rgba[..., 3] > 0, channels=("R", "G", "B")), 4)
    assert np.all(seg.labels[:8, :8] == -1)
    assert np.all(seg.labels[8:, 8:] >= 0)
    assert seg.info["n_valid"] == 64 * 64 - 64
    valid = seg.labels >= 0
    assert adjusted_rand_score(truth[valid], seg.labels[valid]) >= 0.99
    assert np.all(seg.proba[:8, :8] == 0) and np.all(np.isnan(seg.log_likelihood[:8, :8]))


def test_nan_pixels_and_mask_are_invalid():
    img, truth = ellipses()
    img[10:20, 10:20] = np.nan
    mask = np.ones(img.shape, bool)
    mask[:, -5:] = False
    seg = segment(img, 3, mask=mask)
    assert np.all(seg.labels[10:20, 10:20] == -1) and np.all(seg.labels[:, -5:] == -1)
    assert np.count_nonzero(seg.labels == -1) == 100 + 5 * img.shape[0]


def test_custom_callable_features():
    img, truth = ellipses()
    calls = []

    def inverted(image):
        calls.append(image.data.shape)
        return 1.0 - image.data[..., 0]

    seg = segment(img, 3, features=[inverted, "position:0.01"])
    assert calls == [img.shape + (1,)]
    assert seg.features.n_features_ == 3
    assert adjusted_rand_score(truth.ravel(), seg.labels.ravel()) >= 0.99
    # Canonical order follows the first feature, here the inverted intensity.
    assert seg.labels[48, 48] == 0


def test_subsample_fit_labels_every_pixel():
    img, truth = quadrants(size=128)
    seg = segment(img, 4, max_fit_samples=500)
    assert seg.info["fit_samples"] == 500
    assert np.all(seg.labels >= 0)
    assert adjusted_rand_score(truth.ravel(), seg.labels.ravel()) >= 0.99


def test_pretrained_model_is_applied_with_its_features(tmp_path):
    img, truth = quadrants()
    seg = segment(img, 4)
    path = tmp_path / "model.npz"
    seg.model.save(path, metadata={"features": seg.features.to_dict()})
    other, other_truth = quadrants(seed=5)
    applied = segment(other, model=gmmseg.GaussianMixture.load(path))
    assert applied.info["pretrained"]
    np.testing.assert_array_equal(applied.labels, other_truth)  # same label = same colour


def test_small_region_cleanup():
    img, truth = quadrants(noise=0)
    img[5, 5] = COLOURS[3]  # a single stray pixel of another segment
    seg = segment(img, 4, min_region_size=4)
    np.testing.assert_array_equal(seg.labels, truth)
    assert segment(img, 4).labels[5, 5] == 3


def test_errors_name_the_problem():
    with pytest.raises(GmmsegError, match="no valid pixels"):
        segment(np.full((8, 8), np.nan, np.float32), 2)
    with pytest.raises(GmmsegError, match="fewer distinct valid pixels than n_components=3"):
        segment(np.zeros((8, 8), np.uint8) + np.eye(8, dtype=np.uint8), 3)
    with pytest.raises(ValueError, match="mask must be a bool array of shape"):
        segment(np.zeros((8, 8)), 2, mask=np.ones((4, 4), bool))


def test_input_is_not_modified():
    img, _ = quadrants()
    before = img.copy()
    segment(img, 4, min_region_size=10)
    np.testing.assert_array_equal(img, before)


def test_save_writes_documented_files_and_refuses_overwrite(tmp_path):
    img, _ = quadrants()
    seg = segment(img, 4)
    paths = seg.save(tmp_path, "scene", proba=True, log_likelihood=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["scene_labels.png", "scene_loglik.tif", "scene_overlay.png",
                     "scene_proba.tif", "scene_regions.png", "scene_regions_overlay.png",
                     "scene_report.json"]
    labels = read_image(paths["labels"])
    assert labels.data.dtype == np.uint8
    np.testing.assert_array_equal(labels.data[..., 0], seg.labels)
    report = json.loads(paths["report"].read_text())
    assert report["model"]["n_components"] == 4
    assert report["features"]["spec"] == "lab,position"
    assert [s["pixels"] for s in report["segments"]] == [1024] * 4
    assert report["gmmseg_version"] == gmmseg.__version__
    for key in ("bic", "aic", "mean_log_likelihood"):
        assert np.isfinite(report[key])
    with pytest.raises(OutputExistsError, match="scene_labels.png"):
        seg.save(tmp_path, "scene")
    seg.save(tmp_path, "scene", overwrite=True)


def test_report_lists_outputs_and_failed_overwrite_leaves_no_stale_report(tmp_path):
    img, _ = quadrants()
    seg = segment(img, 4)
    paths = seg.save(tmp_path, "scene")
    report = json.loads(paths["report"].read_text())
    assert report["outputs"] == {"labels": "scene_labels.png", "overlay": "scene_overlay.png",
                                 "regions": "scene_regions.png",
                                 "regions_overlay": "scene_regions_overlay.png",
                                 "report": "scene_report.json"}
    (tmp_path / "scene_proba.tif").mkdir()  # makes the proba write fail half-way
    with pytest.raises(OSError):
        seg.save(tmp_path, "scene", overwrite=True, proba=True)
    assert not paths["report"].exists()  # nothing left that looks like a complete set


def test_regions_that_fail_or_a_stopped_save_leave_no_file(tmp_path, monkeypatch):
    # save works out the regions before it writes anything: their error
    # reaches the caller with nothing written, and an error or Ctrl-C while
    # the pictures are encoded leaves no file behind either.
    img, _ = quadrants()
    seg = segment(img, 4)

    def failing_regions(*args, **kwargs):
        raise MemoryError("no room for the regions")

    monkeypatch.setattr(gmmseg.pipeline.Segmentation, "regions", failing_regions)
    with pytest.raises(MemoryError, match="no room"):
        seg.save(tmp_path, "scene")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    def interrupted(path, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(gmmseg.pipeline.outputs, "write_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        seg.save(tmp_path, "scene")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    paths = seg.save(tmp_path, "scene")        # and a later save is complete
    assert np.array_equal(read_image(paths["regions"]).data[..., 0], seg.regions())


def test_save_with_regions_works_at_interpreter_exit(tmp_path):
    # atexit handlers run after Python stops thread pools: save then encodes
    # on its own thread.
    import subprocess
    import sys
    script = f"""
import atexit, numpy as np, gmmseg
img = np.zeros((40, 40, 3), np.uint8); img[20:] = 200; img[:, 20:, 1] = 150
seg = gmmseg.segment(img, 4)
atexit.register(lambda: print(sorted(seg.save({str(tmp_path)!r}, "x"))))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'regions', 'regions_overlay', 'report'" in done.stdout
    assert (tmp_path / "x_regions.png").is_file() and (tmp_path / "x_report.json").is_file()


def test_overwrite_removes_what_the_replaced_report_listed_and_nothing_else(tmp_path):
    img, _ = quadrants()
    seg = segment(img, 4)
    seg.save(tmp_path, "scene", proba=True)
    (tmp_path / "scene_notes.txt").write_text("mine")
    (tmp_path / "other_labels.png").write_bytes(b"x")
    seg.save(tmp_path, "scene", overwrite=True, regions=None)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["other_labels.png", "scene_labels.png", "scene_notes.txt",
                     "scene_overlay.png", "scene_report.json"]
    # A report naming files outside its own set removes none of them.
    report = tmp_path / "scene_report.json"
    doc = json.loads(report.read_text())
    doc["outputs"].update(a="other_labels.png", b="../scene_labels.png", c="scene_notes.txt/x")
    report.write_text(json.dumps(doc))
    seg.save(tmp_path, "scene", overwrite=True, regions=None)
    assert (tmp_path / "other_labels.png").exists() and (tmp_path / "scene_notes.txt").exists()
    # A listed output that cannot be removed does not fail a complete save.
    seg.save(tmp_path, "scene", overwrite=True, proba=True)
    seg.save(tmp_path, "scene", overwrite=True, regions=None)
    (tmp_path / "scene_proba.tif").mkdir()
    doc = json.loads(report.read_text())
    doc["outputs"]["proba"] = "scene_proba.tif"
    report.write_text(json.dumps(doc))
    seg.save(tmp_path, "scene", overwrite=True, regions=None)
    assert (tmp_path / "scene_proba.tif").is_dir() and report.exists()


def test_saved_model_carries_its_features(tmp_path):
    img, truth = quadrants()
    seg = segment(img, 4)
    seg.model.save(tmp_path / "model.npz")
    other, other_truth = quadrants(seed=3)
    applied = segment(other, model=gmmseg.GaussianMixture.load(tmp_path / "model.npz"))
    np.testing.assert_array_equal(applied.labels, other_truth)


def test_regions_split_a_segment_into_its_connected_pieces(tmp_path):
    # Two red squares far apart on grey: one segment, two regions.
    rng = np.random.default_rng(0)
    img = np.full((60, 60, 3), 128.0) + rng.normal(0, 4, (60, 60, 3))
    img[5:20, 5:20] = [200, 30, 30]
    img[40:55, 40:55] = [200, 30, 30]
    img = np.clip(img, 0, 255).astype(np.uint8)
    seg = segment(img, 2, features="lab")
    assert seg.labels[10, 10] == seg.labels[45, 45] != seg.labels[0, 0]
    regions = seg.regions(3)
    assert regions.dtype == np.int32 and regions.shape == (60, 60)
    assert len({regions[10, 10], regions[45, 45], regions[0, 0]}) == 3
    assert seg.regions(3) is not regions and np.array_equal(seg.regions(3), regions)
    assert seg.region_hierarchy() is seg.region_hierarchy()      # made once
    paths = seg.save(tmp_path, "two", regions=3)
    saved = read_image(paths["regions"]).data[..., 0]
    assert np.array_equal(saved, regions)
    assert paths["regions_overlay"].is_file()
    report = json.loads(paths["report"].read_text())
    assert report["regions"]["n_regions"] == 3 and sum(report["regions"]["pixels"]) == 3600
    assert report["outputs"]["regions"] == "two_regions.png"


def test_regions_by_default_for_colour_photos_only(tmp_path):
    img, truth = quadrants()
    seg = segment(img, 4)
    # The four quadrants differ by far more than the default scale allows to merge.
    assert np.array_equal(seg.regions(), seg.regions(scale=postprocess.REGION_SCALE))
    assert adjusted_rand_score(truth.ravel(), seg.regions().ravel()) > 0.99
    assert seg.regions(scale=1.0).max() == 0        # at scale 1 all merge
    paths = seg.save(tmp_path / "photo", "scene")
    report = json.loads(paths["report"].read_text())
    assert report["regions"] == {**report["regions"], "requested": "auto",
                                 "scale": postprocess.REGION_SCALE, "n_regions": 4,
                                 "ridge": postprocess.REGION_RIDGE,
                                 "min_share": postprocess.REGION_MIN_SHARE}
    assert np.array_equal(read_image(paths["regions"]).data[..., 0], seg.regions())
    # Grey images, rasters and volumes get regions only when asked for.
    grey = segment(img.mean(axis=2).astype(np.float32), 4)
    paths = grey.save(tmp_path / "grey", "scene")
    assert "regions" not in paths
    report = json.loads(paths["report"].read_text())
    assert report["regions"] == {"requested": "auto", "scale": postprocess.REGION_SCALE,
                                 "n_regions": None}
    paths = grey.save(tmp_path / "grey2", "scene", regions="scale", region_scale=0.05)
    assert paths["regions"].is_file()
    assert json.loads(paths["report"].read_text())["regions"]["scale"] == 0.05
    for off in (None, False):
        paths = seg.save(tmp_path / f"{off}", "scene", regions=off)
        assert sorted(paths) == ["labels", "overlay", "report"]
        assert "regions" not in json.loads(paths["report"].read_text())
    with pytest.raises(ValueError, match="region_scale"):   # checked for any image
        grey.save(tmp_path / "bad", "scene", region_scale=float("nan"))
    for bad in ("some", 0, True, 2.5):
        with pytest.raises(ValueError, match="regions must be"):
            seg.save(tmp_path / "bad", "scene", regions=bad)
    for bad_scale in (-1.0, 100.0):       # 100: the default before the scale was a share
        with pytest.raises(ValueError, match=r"region_scale must be a number in \[0, 1\]"):
            seg.save(tmp_path / "bad", "scene", region_scale=bad_scale)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_regions_of_grey_and_masked_images():
    img, _ = quadrants()
    grey = img.mean(axis=2).astype(np.float32)
    mask = np.ones(grey.shape, bool)
    mask[:, 30:34] = False
    seg = segment(grey, 4, mask=mask)
    regions = seg.regions(2)
    assert np.all(regions[:, 30:34] == -1)
    # The masked band cuts the image in two parts that cannot merge.
    assert seg.region_hierarchy().min_regions == 2
    assert len(np.unique(regions[regions >= 0])) == 2


def test_photo_overlay_file_is_unchanged_and_heat_maps_carry_a_colour_bar(tmp_path):
    img, _ = quadrants(size=400)
    seg = segment(img, 4, random_state=0)
    paths = seg.save(tmp_path, "scene", uncertainty=True, anomaly=True)
    png = gmmseg.read_image(paths["overlay"]).data
    np.testing.assert_array_equal(png, seg.overlay(0.5))  # a 2-D overlay: the image's size
    assert seg.montage().shape == png.shape
    report = json.loads(paths["report"].read_text())
    heat_maps = report["heat_maps"]
    assert heat_maps["uncertainty"]["value_range"] == [0.0, 1.0]
    assert "normalised posterior entropy" in heat_maps["uncertainty"]["quantity"]
    low, high = heat_maps["anomaly"]["value_range"]
    assert (low, high) == pytest.approx(postprocess.percentile_range(
        -seg.log_likelihood, seg.valid, percentiles=(1, 99.5)))
    assert "nats" in heat_maps["anomaly"]["quantity"]
    for kind, values, value_range, cmap in [
            ("uncertainty", seg.uncertainty, (0.0, 1.0), "viridis"),
            ("anomaly", -seg.log_likelihood, (low, high), "magma")]:
        picture = gmmseg.read_image(paths[kind]).data
        # The heat map at the top, at the image's size, then its colour bar.
        assert picture.shape[1] == 400 and picture.shape[0] > 400 + 30
        np.testing.assert_array_equal(
            picture[:400], postprocess.heat_map(values, seg.valid, value_range=value_range,
                                                cmap=cmap))
        bar = postprocess.colorbar(400, value_range, cmap=cmap,
                                   label=heat_maps[kind]["quantity"])
        np.testing.assert_array_equal(picture[400:], bar)
        # The bar runs through the colour map: its darkest and brightest colours are there.
        table = postprocess.colormap(cmap)
        for end in (table[2], table[253]):
            assert (np.abs(bar.astype(int) - end).sum(-1) <= 6).any()


def test_segment_names_follow_the_canonical_order():
    img, _ = quadrants()
    seg = segment(img, 4, random_state=0)
    assert gmmseg.pipeline.figures.segment_names(seg) == [
        "segment 0 (darkest)", "segment 1", "segment 2", "segment 3 (brightest)"]
    seg = segment(img, 2, features="rgb", random_state=0)
    assert gmmseg.pipeline.figures.segment_names(seg) == [
        "segment 0 (lowest R)", "segment 1 (highest R)"]
    assert gmmseg.pipeline.figures.segment_names(segment(img, 1)) == ["segment 0"]


def _record_e_steps(monkeypatch):
    """Every GaussianMixture.e_step call from now on, as the outputs it asked for."""
    calls = []
    original = gmmseg.GaussianMixture.e_step

    def e_step(self, X, *, labels=True, proba=True, log_likelihood=True):
        calls.append({"labels": labels, "proba": proba, "log_likelihood": log_likelihood})
        return original(self, X, labels=labels, proba=proba, log_likelihood=log_likelihood)

    monkeypatch.setattr(gmmseg.GaussianMixture, "e_step", e_step)
    return calls


def test_segment_works_out_proba_and_log_likelihood_only_when_read(monkeypatch):
    img, _ = quadrants(48)
    img = img.astype(np.float32) / 255
    img[:5, :7] = np.nan                               # invalid pixels: 0 and NaN in the maps
    calls = _record_e_steps(monkeypatch)
    seg = segment(img, 4, min_region_size=3, random_state=0)
    labelling = [c for c in calls if c["labels"]]
    assert labelling == [{"labels": True, "proba": False, "log_likelihood": True}]
    assert not any(c["proba"] for c in calls)
    assert "on demand: proba, log_likelihood" in repr(seg)
    n_before = len(calls)
    proba = seg.proba
    assert calls[n_before:] == [{"labels": False, "proba": True, "log_likelihood": False}]
    assert seg.proba is proba                          # kept, not worked out again
    log_lik = seg.log_likelihood
    assert len(calls) == n_before + 2 and "on demand" not in repr(seg)
    # The values an eager E-step on the same features gives, exactly.
    valid = seg.valid
    X = seg.features.transform(seg.image, valid=valid)
    eager = seg.model.e_step(X)
    np.testing.assert_array_equal(proba[valid], eager.proba)
    np.testing.assert_array_equal(log_lik[valid], eager.log_likelihood)
    assert np.all(proba[~valid] == 0) and np.all(np.isnan(log_lik[~valid]))
    assert seg.info["mean_log_likelihood"] == float(eager.log_likelihood.mean(dtype=np.float64))
    # The labels are the model's (argmax) except where the clean-up merged specks.
    agree = np.mean(proba.argmax(-1)[valid] == seg.labels[valid])
    assert agree > 0.99


def test_compute_maps_gives_both_maps_in_one_pass(monkeypatch):
    img, _ = quadrants(32)
    seg = segment(img, 4)
    calls = _record_e_steps(monkeypatch)
    assert seg.compute_maps() is seg
    assert calls == [{"labels": False, "proba": True, "log_likelihood": True}]
    seg.compute_maps()
    _ = seg.proba, seg.log_likelihood                  # stored: no further pass
    assert len(calls) == 1


def test_save_with_defaults_never_works_out_proba(tmp_path, monkeypatch):
    img, _ = quadrants(48)
    calls = _record_e_steps(monkeypatch)
    seg = segment(img, 4)
    seg.save(tmp_path / "a")
    assert not any(c["proba"] for c in calls)
    n_before = len(calls)
    paths = seg.save(tmp_path / "b", proba=True, log_likelihood=True)
    assert calls[n_before:] == [{"labels": False, "proba": True, "log_likelihood": True}]
    assert read_image(paths["proba"]).data.shape == img.shape[:2] + (4,)


def test_smoothing_and_tissue_style_maps_are_stored_at_once(monkeypatch):
    img, _ = ellipses(48)
    seg = segment(img, 3, smoothing=1.0)
    calls = _record_e_steps(monkeypatch)
    assert seg.proba.shape == img.shape + (3,) and np.isfinite(seg.log_likelihood).all()
    assert calls == []                                 # nothing left to work out
    given = gmmseg.Segmentation(seg.labels, seg.proba, seg.log_likelihood, seg.model,
                                seg.features, seg.image)
    assert given.proba is seg.proba


def test_regions_reuse_the_lab_map_of_the_features(monkeypatch):
    img, _ = quadrants(64)
    seg = segment(img, 4)
    expected = postprocess.region_hierarchy(
        seg.labels, gmmseg.features.lab(seg.image)).cut(scale=postprocess.REGION_SCALE)

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("the Lab map was converted again")

    monkeypatch.setattr(gmmseg.pipeline.result, "lab", no_second_conversion)
    np.testing.assert_array_equal(seg.regions(), expected)
    monkeypatch.undo()
    # Released once used; another setting converts again, with the same values.
    assert seg._region_map is None
    again = seg.regions(min_size=postprocess.REGION_MIN_SIZE + 1)
    assert again.shape == seg.labels.shape
