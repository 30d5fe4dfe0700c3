"""Images larger than memory: the windowed path gives the in-memory path's labels.

Rasters are generated in ``tmp_path`` (tiled GeoTIFFs with a CRS and a
nodata corner); the in-memory path (:func:`gmmseg.segment`) is the reference.
"""

import hashlib
import json
import math
import warnings

import numpy as np
import pytest

import gmmseg
from gmmseg.errors import GmmsegError
from gmmseg.pipeline import windowed
from gmmseg.pipeline.windowed import parse_memory, plan_windows, segment_windowed

rasterio = pytest.importorskip("rasterio")
from affine import Affine

NODATA = 0
CRS = "EPSG:32633"


def _scene(path, h, w, *, bands=4, noise=150.0, seed=0, tile=256):
    """A tiled uint16 GeoTIFF: four classes in smooth blobs, Gaussian noise, a nodata corner."""
    import cv2

    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.random((h // 64 + 2, w // 64 + 2)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    classes = np.digitize(field, [0.3, 0.5, 0.7])
    means = rng.uniform(500, 4000, (4, bands)).astype(np.float32)
    data = np.empty((bands, h, w), np.uint16)
    for b in range(bands):
        values = means[classes, b] + noise * rng.standard_normal((h, w), dtype=np.float32)
        data[b] = np.clip(values, 1, 65535)
    data[:, : h // 10, : w // 7] = NODATA
    profile = dict(driver="GTiff", height=h, width=w, count=bands, dtype="uint16", crs=CRS,
                   transform=Affine(10, 0, 500000, 0, -10, 6000000), tiled=True,
                   blockxsize=tile, blockysize=tile, nodata=NODATA)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def _labels(path):
    """A label GeoTIFF as the API's labels: int32, -1 at nodata."""
    with warnings.catch_warnings():
        # The labels of a .npy or plain TIFF have no geotransform.
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = rasterio.open(path)
    with ds:
        labels = ds.read(1).astype(np.int32)
        labels[labels == ds.nodata] = -1
    return labels


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 4000 x 4000 x 4 scene, its in-memory labels, and a windowed run with 2 threads."""
    folder = tmp_path_factory.mktemp("big")
    path = _scene(folder / "scene.tif", 4000, 4000)
    reference = gmmseg.segment(gmmseg.read_image(path), 4, random_state=0).labels
    out = folder / "threads"
    report = segment_windowed(path, out, n_components=4, random_state=0, max_memory="400MB",
                              workers=2)
    return path, reference, out, report


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _scene(tmp_path_factory.mktemp("small") / "small.tif", 512, 640, seed=1, tile=128)


def test_windowed_labels_equal_the_in_memory_labels(big):
    _, reference, out, report = big
    assert report["windowed"]["windows"] >= 16
    assert np.array_equal(_labels(out / "scene_labels.tif"), reference)
    assert report["segments"][0]["pixels"] == np.count_nonzero(reference == 0)


def test_dask_local_cluster_writes_the_same_bytes(big, tmp_path):
    pytest.importorskip("distributed")
    path, _, out, _ = big
    seen = []
    report = segment_windowed(path, tmp_path, n_components=4, random_state=0,
                              max_memory="400MB", workers=2, scheduler="local",
                              processes=False, progress=lambda done, total: seen.append(total))
    assert report["windowed"]["windows"] >= 16
    assert _digest(tmp_path / "scene_labels.tif") == _digest(out / "scene_labels.tif")
    assert len(seen) == report["windowed"]["windows"] and seen[-1] == len(seen)


def test_label_map_is_a_cloud_optimised_geotiff(big):
    path, _, out, _ = big
    with rasterio.open(out / "scene_labels.tif") as ds, rasterio.open(path) as src:
        assert ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)
        assert ds.overviews(1) == [2, 4, 8]
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.compression.name.lower() == "deflate"
        assert ds.crs == src.crs and ds.transform == src.transform
        assert ds.nodata == 255 and ds.dtypes[0] == "uint8"
        table = ds.colormap(1)
    colors = gmmseg.postprocess.segment_colors(4)
    assert [table[k][:3] for k in range(4)] == [tuple(int(c) for c in rgb) for rgb in colors]
    assert table[255][3] == 0
    saved = json.loads((out / "scene_report.json").read_text())
    assert saved["files"]["labels"].endswith("scene_labels.tif")
    from PIL import Image

    with Image.open(out / "scene_overlay.png") as preview:
        assert max(preview.size) <= windowed.PREVIEW_SIZE
    assert sorted(p.name for p in out.iterdir()) == [
        "scene_labels.tif", "scene_labels.tif.aux.xml", "scene_overlay.png", "scene_report.json"]


@pytest.mark.parametrize("features", ["bands,texture", "gray,contrast", "bands,position:0.5"])
def test_neighbourhood_and_position_features_have_no_seams(small, tmp_path, features):
    reference = gmmseg.segment(gmmseg.read_image(small), 4, features=features).labels
    report = segment_windowed(small, tmp_path, n_components=4, features=features,
                              window_size=128)
    assert report["windowed"]["windows"] >= 16
    assert min(report["windowed"]["halo"]) > 0 or "position" in features
    assert np.array_equal(_labels(tmp_path / "small_labels.tif"), reference)


def test_smoothing_agrees_and_does_not_depend_on_the_windows(tmp_path):
    path = _scene(tmp_path / "noisy.tif", 512, 640, noise=900.0, seed=2, tile=128)
    reference = gmmseg.segment(gmmseg.read_image(path), 4, smoothing=1.0).labels
    maps = []
    for size in (128, 256):
        out = tmp_path / f"w{size}"
        report = segment_windowed(path, out, n_components=4, smoothing=1.0, window_size=size)
        maps.append(_labels(out / "noisy_labels.tif"))
    assert report["windowed"]["prior_sweeps"] == windowed.WINDOW_SWEEPS
    # Exact by design across window layouts; close to the in-memory prior
    # (its parameters are re-estimated on the whole image there).
    assert np.array_equal(maps[0], maps[1])
    assert np.mean(maps[0] == reference) > 0.995


def test_probability_and_log_likelihood_maps_match(small, tmp_path):
    seg = gmmseg.segment(gmmseg.read_image(small), 3)
    segment_windowed(small, tmp_path, n_components=3, window_size=256, save_proba=True,
                     save_loglik=True)
    with rasterio.open(tmp_path / "small_proba.tif") as ds:
        assert ds.count == 3 and ds.dtypes[0] == "float32" and ds.profile["tiled"]
        proba = np.moveaxis(ds.read(), 0, -1)
    with rasterio.open(tmp_path / "small_loglik.tif") as ds:
        loglik = ds.read(1)
    valid = seg.valid
    np.testing.assert_allclose(proba[valid], seg.proba[valid], atol=1e-6)
    np.testing.assert_allclose(loglik[valid], seg.log_likelihood[valid], rtol=1e-6)
    assert np.isnan(loglik[~valid]).all()


def test_npy_tiff_and_nifti_windows_equal_the_whole_file(tmp_path):
    import tifffile

    rng = np.random.default_rng(3)
    data = (rng.random((300, 260, 3)) * [1, 2, 3] + np.arange(260)[:, None] / 100).astype(
        np.float32)
    data[:20, :30] = np.nan
    np.save(tmp_path / "a.npy", data)
    colour = (np.nan_to_num(data) * 10000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "b.tif", colour, tile=(64, 64), compression="zlib",
                     photometric="rgb")
    for name in ("a.npy", "b.tif"):
        reference = gmmseg.segment(gmmseg.read_image(tmp_path / name), 3).labels
        report = segment_windowed(tmp_path / name, tmp_path / name[0], n_components=3,
                                  window_size=64)
        assert report["windowed"]["windows"] >= 4
        assert np.array_equal(_labels(tmp_path / name[0] / f"{name[0]}_labels.tif"), reference)
    nifti = "tests/data/anatomical.nii"
    seg = gmmseg.segment(gmmseg.read_image(nifti), 3)
    report = segment_windowed(nifti, tmp_path / "n", n_components=3, window_size=4)
    assert report["windowed"]["windows"] >= 6
    written = gmmseg.read_image(tmp_path / "n" / "anatomical_labels.nii.gz").data[..., 0]
    assert np.array_equal(written, np.where(seg.labels >= 0, seg.labels, 0))


def test_parse_memory():
    assert parse_memory("2GB") == 2 * 10**9
    assert parse_memory("512 MiB") == 512 * 2**20
    assert parse_memory("1.5g") == 1_500_000_000
    for bad in ("lots", "-1GB", "0", "2 GB of RAM", ""):
        with pytest.raises(ValueError, match="max_memory must be"):
            parse_memory(bad)


def test_default_budget_is_at_most_a_quarter_of_available_memory():
    budget = windowed.check_max_memory()
    available = windowed.available_memory()
    assert budget <= windowed.DEFAULT_MAX_MEMORY
    assert available is None or budget <= available // 4


def test_plan_covers_the_image_with_block_aligned_windows():
    plan = plan_windows((1000, 900), (256, 256), 100, 12_000_000, (10, 10))
    covered = np.zeros((1000, 900), int)
    for (r0, r1), (c0, c1) in plan.cores:
        assert r0 % 256 == 0 and c0 % 256 == 0
        covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all()
    for core, outer in zip(plan.cores, plan.outers):
        assert all(o0 == max(0, c0 - 10) and o1 == min(n, c1 + 10)
                   for (c0, c1), (o0, o1), n in zip(core, outer, (1000, 900)))
    assert math.prod(min(n, w + 20) for w, n in zip(plan.window, (1000, 900))) * 100 <= 12e6


def test_budget_too_small_for_one_window_is_one_line(small, tmp_path):
    with pytest.raises(GmmsegError, match=r"small.tif: max_memory=.* is too small") as err:
        segment_windowed(small, tmp_path, max_memory="50MB")
    assert "\n" not in str(err.value)
    with pytest.raises(GmmsegError, match="one 256 x 256 block with its 18 px halo"):
        plan_windows((700, 900), (256, 256), 200, 1_000_000, (18, 18), where="small.tif: ")
    assert list(tmp_path.iterdir()) == []


def test_requests_the_windows_cannot_honour_are_refused(small, tmp_path):
    for kwargs, message in [(dict(min_region_size=10), "min_region_size needs the whole"),
                            (dict(regions="scale"), "connected regions are not computed")]:
        with pytest.raises(GmmsegError, match=message):
            segment_windowed(small, tmp_path, window_size=256, **kwargs)


def test_cli_switches_to_windows_beyond_max_memory(big, small, tmp_path):
    from click.testing import CliRunner

    from gmmseg.cli import main

    path, _, out, _ = big
    assert windowed.needs_windows(path, max_memory="400MB")
    assert not windowed.needs_windows(small, max_memory="4GB")
    runner = CliRunner()
    result = runner.invoke(main, ["segment", str(path), "-k", "4", "-o", str(tmp_path),
                                  "--max-memory", "400MB", "-j", "2"])
    assert result.exit_code == 0, result.output
    assert "windowed" in result.output
    assert _digest(tmp_path / "scene_labels.tif") == _digest(out / "scene_labels.tif")


def test_cli_bad_budget_is_one_line(small, tmp_path):
    from click.testing import CliRunner

    from gmmseg.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["segment", str(small), "-o", str(tmp_path),
                                  "--max-memory", "100MiB"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "--max-memory" in result.output
    assert "is too small" in result.output and list(tmp_path.iterdir()) == []
    result = runner.invoke(main, ["segment", str(small), "--max-memory", "lots"])
    assert result.exit_code == 2 and "Invalid value for '--max-memory'" in result.output


def test_an_interrupted_run_leaves_no_file(small, tmp_path):
    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_windowed(small, tmp_path, n_components=3, window_size=128, save_proba=True,
                         progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs_are_refused_as_a_save_refuses_them(small, tmp_path):
    """The same error as ``Segmentation.save``: OutputExistsError, before any work,
    the existing file untouched."""
    from gmmseg.errors import OutputExistsError

    report = tmp_path / f"{small.stem}_report.json"
    report.write_text("kept")
    with pytest.raises(OutputExistsError, match="_report.json: output file exists"):
        segment_windowed(small, tmp_path, n_components=3, window_size=256)
    assert report.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == [
        report.name]


def test_in_memory_standardisation_uses_the_fit_sample():
    rng = np.random.default_rng(4)
    data = rng.normal(100, 20, (60, 50, 2)).astype(np.float32)
    seg = gmmseg.segment(data, 2, max_fit_samples=400, random_state=7)
    raw = gmmseg.features.FeatureExtractor("bands").raw_rows(gmmseg.io.as_image(data))
    rows = np.sort(np.random.default_rng(7).choice(len(raw), 400, replace=False))
    np.testing.assert_allclose(seg.features.mean_, raw[rows].mean(axis=0, dtype=np.float64),
                               rtol=1e-6)
    assert not np.allclose(seg.features.mean_, raw.mean(axis=0, dtype=np.float64), rtol=1e-6)


def test_k_chosen_on_the_fit_sample_as_in_memory(small, tmp_path):
    seg = gmmseg.segment(gmmseg.read_image(small), [2, 3, 5], criterion="bic")
    report = segment_windowed(small, tmp_path, n_components=[2, 3, 5], criterion="bic",
                              window_size=256)
    assert report["model"]["n_components"] == seg.model.n_components
    assert report["model_selection"]["k_values"] == [2, 3, 5]
    assert np.array_equal(_labels(tmp_path / "small_labels.tif"), seg.labels)
