"""``batch`` within a memory budget: inputs beyond a worker's share are segmented by windows.

A folder holds a tiled GeoTIFF (1280 x 1280 x 4, beyond 300 MB of working
set) and a small PNG; the budget is divided among the workers that run at
once, so ``-j 2`` with 600 MB windows the GeoTIFF and keeps the PNG in memory.
"""

import csv
import json
import shutil

import numpy as np
import pytest

import gmmseg
from gmmseg.batch import find_inputs, run_batch
from gmmseg.batch.windowed import MIN_WORKER_MEMORY, worker_budget
from gmmseg.io import write_png
from gmmseg.pipeline.windowed import needs_windows, parse_memory, segment_windowed

pytest.importorskip("rasterio")
from test_windowed import _labels, _scene  # the windowed tests' scenes

KW = {"n_components": 3, "random_state": 0}


def _photo(path):
    """A 48 x 64 RGB PNG of three colour bands, with mild seeded noise."""
    rng = np.random.default_rng(3)
    rgb = np.zeros((48, 64, 3), np.float64)
    for k, colour in enumerate([(200, 30, 30), (40, 170, 60), (30, 40, 200)]):
        rgb[:, k * 22:(k + 1) * 22] = colour
    rgb += rng.normal(0, 6, rgb.shape)
    write_png(path, np.clip(rgb, 0, 255).astype(np.uint8))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    _scene(root / "scene.tif", 1280, 1280, seed=2, tile=128)
    _photo(root / "photo.png")
    return root


@pytest.fixture(scope="module")
def done(folder, tmp_path_factory):
    """A batch with -j 2 and 600 MB: 300 MB a worker."""
    out = tmp_path_factory.mktemp("out")
    report = run_batch(find_inputs(folder), out, segment_kwargs=KW, jobs=2, max_memory="600MB")
    return out, report


def _rows(report):
    return {row["input"]: row for row in report.rows}


def test_budget_is_divided_among_the_workers(folder, done):
    _, report = done
    assert report.options["max_memory"] == parse_memory("600MB")
    assert report.options["worker_memory"] == parse_memory("600MB") // 2
    # Beyond a worker's share, not beyond the whole budget: the share decides.
    assert needs_windows(folder / "scene.tif", max_memory="300MB", **KW)
    assert not needs_windows(folder / "scene.tif", max_memory="600MB", **KW)


def test_windowed_input_has_the_labels_of_segment_windowed_and_in_memory(folder, done,
                                                                         tmp_path):
    out, report = done
    row = _rows(report)["scene.tif"]
    assert row["status"] == "ok", row["error"]
    assert row["windows"] >= 2
    alone = segment_windowed(folder / "scene.tif", tmp_path, max_memory="300MB",
                             n_jobs=report.options["threads"], **KW)
    assert alone["windowed"]["windows"] == row["windows"]
    labels = _labels(out / "scene_labels.tif")
    assert np.array_equal(labels, _labels(tmp_path / "scene_labels.tif"))
    in_memory = gmmseg.segment(gmmseg.read_image(folder / "scene.tif"), **KW).labels
    assert np.array_equal(labels, in_memory)


def test_rows_outputs_and_gallery_are_coherent(done):
    out, report = done
    rows = _rows(report)
    scene, photo = rows["scene.tif"], rows["photo.png"]
    assert photo["status"] == "ok" and photo["windows"] is None
    assert scene["outputs"] == {"labels": "scene_labels.tif",
                                "labels_aux": "scene_labels.tif.aux.xml",
                                "overlay": "scene_overlay.png", "report": "scene_report.json"}
    assert all((out / rel).is_file() for rel in scene["outputs"].values())
    assert (scene["width"], scene["height"], scene["channels"]) == (1280, 1280, 4)
    assert scene["n_components"] == 3 and abs(sum(scene["shares"]) - 1) < 1e-5
    # The gallery shows the overlay preview; the scene itself is never read whole.
    assert set(scene["thumbnails"]) == {"overlay"}
    assert set(photo["thumbnails"]) == {"input", "overlay", "regions_overlay"}
    assert all((out / rel).is_file() for rel in scene["thumbnails"].values())
    with open(out / "batch_summary.csv", newline="") as fh:
        csv_rows = {r["input"]: r for r in csv.DictReader(fh)}
    assert csv_rows["scene.tif"]["status"] == "ok"
    assert csv_rows["scene.tif"]["windows"] == str(scene["windows"])
    assert csv_rows["scene.tif"]["labels"] == "scene_labels.tif"
    assert csv_rows["photo.png"]["windows"] == ""
    page = (out / "index.html").read_text()
    assert f"windowed: {scene['windows']} windows" in page
    assert json.loads((out / "batch_summary.json").read_text())["counts"]["ok"] == 2


def test_resume_skips_a_finished_windowed_input(folder, done, tmp_path):
    out, _ = done
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = (copy / "scene_report.json").stat().st_mtime_ns
    shutil.rmtree(copy / "thumbs")  # drawn again from the overlay preview
    report = run_batch(find_inputs(folder), copy, segment_kwargs=KW, jobs=2,
                       max_memory="600MB", resume=True)
    rows = _rows(report)
    assert [rows[n]["status"] for n in ("scene.tif", "photo.png")] == ["skipped", "skipped"]
    assert rows["scene.tif"]["windows"] >= 2
    assert set(rows["scene.tif"]["thumbnails"]) == {"overlay"}
    assert (copy / rows["scene.tif"]["thumbnails"]["overlay"]).is_file()
    assert (copy / "scene_report.json").stat().st_mtime_ns == before


def test_too_small_a_budget_fails_that_input_alone(folder, tmp_path):
    report = run_batch(find_inputs(folder), tmp_path, segment_kwargs=KW, jobs=1,
                       max_memory="200MB")
    rows = _rows(report)
    assert rows["photo.png"]["status"] == "ok"
    scene = rows["scene.tif"]
    assert scene["status"] == "failed"
    assert "max_memory" in scene["error"]  # the row names the input
    assert "is too small" in scene["error"] and "\n" not in scene["error"]
    assert not list(tmp_path.glob("scene_*"))


def test_a_shared_model_is_applied_in_memory_with_a_warning(folder, tmp_path):
    scenes = [item for item in find_inputs(folder) if item.path.name == "scene.tif"]
    report = run_batch(scenes, tmp_path, segment_kwargs=KW, jobs=1, max_memory="300MB",
                       shared_model=True)
    scene = _rows(report)["scene.tif"]
    assert scene["status"] == "ok" and not scene.get("windows"), scene["error"]
    assert any("beyond max_memory" in w and "in memory" in w for w in scene["warnings"])
    assert (tmp_path / "scene_labels.tif").exists()


def test_cli_batch_takes_max_memory(folder, tmp_path):
    from click.testing import CliRunner

    from gmmseg.cli import main

    result = CliRunner().invoke(main, ["batch", str(folder), "-o", str(tmp_path), "-k", "3",
                                       "-j", "1", "--max-memory", "200MB", "-q"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "scene.tif" in errors[0] and "--max-memory" in errors[0]
    assert (tmp_path / "photo_labels.png").is_file()
    result = CliRunner().invoke(main, ["batch", str(folder), "--max-memory", "lots"])
    assert result.exit_code == 2 and "Invalid value for '--max-memory'" in result.output


def test_fewer_workers_run_when_a_share_would_be_too_small():
    assert worker_budget(2 * 1024**3, 2, 5) == (2, 1024**3)
    assert worker_budget(2 * 1024**3, 8, 3) == (3, 2 * 1024**3 // 3)  # inputs at once, not -j
    assert worker_budget(parse_memory("400MB"), 4, 2) == (1, parse_memory("400MB"))
    # Below one worker's minimum: one worker, with what there is (its inputs may fail).
    assert worker_budget(parse_memory("100MB"), 2, 3) == (1, parse_memory("100MB"))
    assert MIN_WORKER_MEMORY == 256 * 1024**2
