"""Tests of the gmmseg command line: files written, exit codes, bad input."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage

from gmmseg.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def photo(tmp_path):
    """A small RGB photo of four noisy colour blocks, written as PNG."""
    rng = np.random.default_rng(0)
    img = np.zeros((48, 64, 3), np.uint8)
    img[:24, :32] = [30, 30, 30]
    img[:24, 32:] = [200, 50, 50]
    img[24:, :32] = [50, 180, 70]
    img[24:, 32:] = [230, 230, 230]
    noisy = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    PILImage.fromarray(noisy).save(path)
    return path


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_segment_writes_exactly_the_documented_files(runner, photo, tmp_path):
    out = tmp_path / "out"
    before = digest(photo)
    result = runner.invoke(main, ["segment", str(photo), "-k", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "photo_labels.png", "photo_overlay.png", "photo_regions.png",
        "photo_regions_overlay.png", "photo_report.json"]
    labels = np.asarray(PILImage.open(out / "photo_labels.png"))
    assert labels.dtype == np.uint8 and labels.shape == (48, 64)
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]
    overlay = np.asarray(PILImage.open(out / "photo_overlay.png"))
    assert overlay.shape == (48, 64, 3)
    report = json.loads((out / "photo_report.json").read_text())
    assert report["model"]["n_components"] == 4
    assert report["input"]["path"] == str(photo)
    assert digest(photo) == before  # the input is never modified
    assert "photo.png: 4 segments" in result.stdout


def test_optional_maps(runner, photo, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["segment", str(photo), "-k", "3", "-o", str(out),
                                  "--save-proba", "--save-loglik", "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == [
        "photo_labels.png", "photo_loglik.tif", "photo_overlay.png", "photo_proba.tif",
        "photo_regions.png", "photo_regions_overlay.png", "photo_report.json"]


def test_existing_outputs_are_kept_unless_overwrite(runner, photo, tmp_path):
    out = tmp_path / "out"
    assert runner.invoke(main, ["segment", str(photo), "-o", str(out)]).exit_code == 0
    first = {p.name: digest(p) for p in out.iterdir()}
    result = runner.invoke(main, ["segment", str(photo), "-o", str(out), "-k", "2"])
    assert result.exit_code == 1
    assert "output exists" in result.stderr and "Traceback" not in result.output
    assert {p.name: digest(p) for p in out.iterdir()} == first
    result = runner.invoke(main, ["segment", str(photo), "-o", str(out), "-k", "2", "--overwrite"])
    assert result.exit_code == 0
    assert json.loads((out / "photo_report.json").read_text())["model"]["n_components"] == 2


def _bad_inputs(folder, photo):
    folder.mkdir()
    bad = {}
    bad["truncated.png"] = photo.read_bytes()[: len(photo.read_bytes()) // 2]
    bad["notes.png"] = b"this is text, not an image\n"
    bad["empty.png"] = b""
    for name, content in bad.items():
        (folder / name).write_bytes(content)
    np.save(folder / "allnan.npy", np.full((8, 8), np.nan, np.float32))
    np.save(folder / "flat.npy", np.zeros((8, 8), np.float32))  # 1 distinct value < K
    return {
        "truncated.png": "truncated",
        "notes.png": "not a supported image",
        "empty.png": "empty",
        "allnan.npy": "no valid pixels",
        "flat.npy": "fewer distinct valid pixels than -k 2; use a smaller -k",
        "missing.png": "not found",
    }


def test_bad_inputs_get_one_line_errors_and_leave_no_output(runner, photo, tmp_path):
    folder = tmp_path / "bad"
    expected = _bad_inputs(folder, photo)
    out = tmp_path / "out"
    args = ["segment", *[str(folder / name) for name in expected], str(photo),
            "-k", "2", "-o", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(expected)
    for line, (name, problem) in zip(errors, expected.items()):
        assert name in line and problem in line.lower(), line
    assert f"{len(expected)} of {len(expected) + 1} inputs failed" in result.stderr
    # The good image in the same run was still processed; nothing else was written.
    assert sorted(p.name for p in out.iterdir()) == [
        "photo_labels.png", "photo_overlay.png", "photo_regions.png",
        "photo_regions_overlay.png", "photo_report.json"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["segment"], "Missing argument"),
        (["segment", "x.png", "-k", "0"], "must be an integer >= 1, got 0"),
        (["segment", "x.png", "--features", "bogus"], "unknown feature 'bogus'"),
        (["segment", "x.png", "--pca", "-3"], "--pca"),
        (["segment", "x.png", "--covariance-type", "wide"], "wide"),
    ],
)
def test_bad_usage_exits_2(runner, args, message):
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output


def test_outputs_never_replace_an_input(runner, photo, tmp_path):
    victim = photo.parent / "photo_overlay.png"
    shutil.copy(photo, victim)
    before = digest(victim)
    result = runner.invoke(main, ["segment", str(photo), "-o", str(photo.parent), "--overwrite",
                                  str(victim)])
    assert result.exit_code == 1
    assert "would replace an input file" in result.stderr
    assert digest(victim) == before


def test_same_stem_twice_gets_distinct_output_names(runner, photo, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photo, other / "photo.png")
    PILImage.open(photo).convert("RGB").save(other / "photo.jpg", quality=95)
    out = tmp_path / "out"
    result = runner.invoke(main, ["segment", str(photo), str(other / "photo.png"),
                                  str(other / "photo.jpg"), str(photo), "-o", str(out)])
    assert result.exit_code == 0, result.output
    # The suffix joins the stem; the same name twice is numbered; a file given twice runs once.
    assert result.stdout.count("segments") == 3
    for stem in ("photo_png", "photo_png_2", "photo_jpg"):
        assert (out / f"{stem}_labels.png").exists() and (out / f"{stem}_report.json").exists()
    assert not (out / "photo_labels.png").exists()


@pytest.mark.parametrize(("options", "min_dice"), [
    ([], 0.80),
    (["--features", "contrast", "--smooth", "1"], 0.88),   # the microscopy recipe
])
def test_nuclei_sample_end_to_end(runner, tmp_path, options, min_dice):
    out = tmp_path / "out"
    result = runner.invoke(main, ["segment", str(SAMPLES / "nuclei.tif"), "-k", "2",
                                  "-o", str(out), *options])
    assert result.exit_code == 0, result.output
    labels = np.asarray(PILImage.open(out / "nuclei_labels.png"))
    truth = np.asarray(PILImage.open(SAMPLES / "nuclei_mask.tif")) > 0
    fg = labels == 1  # canonical order: the brighter segment is label 1
    dice = 2 * np.count_nonzero(fg & truth) / (np.count_nonzero(fg) + np.count_nonzero(truth))
    assert dice > min_dice


def test_info(runner, photo, tmp_path):
    result = runner.invoke(main, ["info", str(photo), str(tmp_path / "nope.png")])
    assert result.exit_code == 1
    assert "image 64 x 48 pixels (width x height), 3 channels R,G,B, uint8" in result.stdout
    assert "nope.png" in result.stderr


def test_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and "gmmseg" in result.output


def test_regions_option(runner, photo, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["segment", str(photo), "-k", "6", "--regions", "3",
                                  "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "photo_labels.png", "photo_overlay.png", "photo_regions.png",
        "photo_regions_overlay.png", "photo_report.json"]
    regions = np.asarray(PILImage.open(out / "photo_regions.png"))
    report = json.loads((out / "photo_report.json").read_text())
    assert report["regions"]["n_regions"] == len(np.unique(regions)) == 3
    assert ", 3 connected regions," in result.stdout
    result = runner.invoke(main, ["segment", str(photo), "--regions", "0", "-o", str(out)])
    assert result.exit_code == 2
    for bad in (["--regions", "many"], ["--regions", "\u00b2"], ["--region-scale", "-1"],
                ["--region-scale", "nan"], ["--region-scale", "100"]):
        result = runner.invoke(main, ["segment", str(photo), *bad, "-o", str(out)])
        assert result.exit_code == 2 and "Traceback" not in result.output


def test_regions_off_and_scale(runner, photo, tmp_path):
    result = runner.invoke(main, ["segment", str(photo), "-k", "6", "--regions", "off",
                                  "-o", str(tmp_path / "off")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "off").iterdir()) == [
        "photo_labels.png", "photo_overlay.png", "photo_report.json"]
    counts = []
    for scale in ("0.001", "1"):
        out = tmp_path / f"scale{scale}"
        result = runner.invoke(main, ["segment", str(photo), "-k", "6", "--region-scale", scale,
                                      "-o", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "photo_report.json").read_text())
        assert report["regions"]["scale"] == float(scale)
        counts.append(report["regions"]["n_regions"])
    assert counts[0] > counts[1] == 1
    # A grey image gets regions only when asked for.
    grey = tmp_path / "grey.png"
    PILImage.open(photo).convert("L").save(grey)
    result = runner.invoke(main, ["segment", str(grey), "-k", "3", "-o", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [
        "grey_labels.png", "grey_overlay.png", "grey_report.json"]
    result = runner.invoke(main, ["segment", str(grey), "-k", "3", "--regions", "scale",
                                  "-o", str(tmp_path / "g2")])
    assert result.exit_code == 0 and (tmp_path / "g2" / "grey_regions.png").is_file()


def test_smooth_option(runner, photo, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["segment", str(photo), "-k", "4", "--smooth", "1",
                                  "--connectivity", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "photo_report.json").read_text())
    assert report["smoothing"] == 1.0 and report["smoothing_iterations"] >= 1
    assert f"+ {report['smoothing_iterations']} with the Potts prior" in result.stdout
    result = runner.invoke(main, ["segment", str(photo), "--smooth", "-1", "-o", str(out)])
    assert result.exit_code == 2
    result = runner.invoke(main, ["segment", str(photo), "--smooth", "1", "--connectivity", "26",
                                  "-o", str(tmp_path / "o2")])
    assert result.exit_code == 1
    assert "connectivity must be one of (4, 8) in 2-D" in result.stderr
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_reader_options_choose_bands(runner, tmp_path):
    data = Path(__file__).resolve().parent / "data"
    out = tmp_path / "out"
    result = runner.invoke(main, ["segment", str(data / "landsat7_etm_6band.tif"), "--bands",
                                  "4,3,2", "-k", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "landsat7_etm_6band_report.json").read_text())
    assert report["input"]["channels"] == ["band4", "band3", "band2"]
    result = runner.invoke(main, ["info", str(data / "landsat7_etm_6band.tif"), "--bands", "7"])
    assert result.exit_code == 1
    assert "landsat7_etm_6band.tif" in result.stderr and "band" in result.stderr
    result = runner.invoke(main, ["info", str(data / "landsat7_etm_6band.tif"), "--bands", "x"])
    assert result.exit_code == 2


# --------------------------------------------------------------------------
# select-k, -k auto, uncertainty and anomaly maps


def test_select_k_prints_a_table_with_the_choice_marked(runner, photo):
    result = runner.invoke(main, ["select-k", str(photo), "--k-max", "6", "--seed", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["K", "mean", "loglik", "BIC", "AIC", "count", "ICL", "entropy",
                                "iter", "seconds"]
    rows = [line for line in lines[1:] if not line.startswith(("count:", "chosen"))]
    assert len(rows) == 6
    assert len({len(line) for line in rows}) == 1  # aligned
    marked = [line for line in rows if line.startswith("*")]
    assert len(marked) == 1 and marked[0].split()[1] == "4"  # the four colour blocks
    assert lines[-2].startswith("count: K = 4 by ICL on 3,072 pixels of rgb, de-quantised; clear")
    assert lines[-1].startswith("chosen: K = 4 (the count) on 3,072 fit pixels")


def test_select_k_several_covariance_types_and_aic(runner, photo):
    result = runner.invoke(main, ["select-k", str(photo), "--k-min", "2", "--k-max", "4",
                                  "--covariance-type", "full", "--covariance-type", "diag",
                                  "--criterion", "aic", "-q"])
    assert result.exit_code == 0, result.output
    assert "covariance" in result.stdout.splitlines()[0]
    assert sum(" diag " in line for line in result.stdout.splitlines()) == 3
    assert "by AIC" in result.stdout


def test_select_k_plot(runner, photo, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "plots" / "bic.png"  # a folder that does not exist yet
    result = runner.invoke(main, ["select-k", str(photo), "--k-max", "3", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(main, ["select-k", str(photo), "--k-max", "3", "--plot", str(plot)])
    assert result.exit_code == 1 and "output exists" in result.stderr


def test_select_k_plot_without_matplotlib(runner, photo, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    plot = tmp_path / "bic.png"
    result = runner.invoke(main, ["select-k", str(photo), "--plot", str(plot)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: --plot needs matplotlib; install it with: pip install 'gmmseg[plot]'")
    assert result.stdout == "" and not plot.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["select-k"], "Missing argument"),
        (["select-k", "x.png", "--k-min", "0"], "--k-min"),
        (["select-k", "x.png", "--k-min", "5", "--k-max", "3"], "smaller than --k-min"),
        (["select-k", "x.png", "--criterion", "mdl"], "mdl"),
        (["segment", "x.png", "-k", "many"], "expected an integer >= 1 or 'auto'"),
        (["segment", "x.png", "-k", "-2"], "must be an integer >= 1, got -2"),
        (["segment", "x.png", "--anomaly-quantile", "1.5"], "--anomaly-quantile"),
        (["segment", "x.png", "--anomaly-quantile", "0.1", "--anomaly-threshold", "-3"],
         "exclude each other"),
    ],
)
def test_select_and_anomaly_bad_usage_exits_2(runner, args, message):
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output


def test_select_k_bad_input_is_one_line(runner, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image")
    result = runner.invoke(main, ["select-k", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "notes.png" in result.stderr
    assert "Traceback" not in result.output


def test_segment_k_auto(runner, photo, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["segment", str(photo), "-k", "auto", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 segments (counted by ICL among K = 1..10)" in result.stdout
    report = json.loads((out / "photo_report.json").read_text())
    selection = report["model_selection"]
    assert selection["criterion"] == "auto" and selection["chosen"] == 4
    assert selection["decided_by"] == "count" and selection["count"]["clear"]
    assert selection["k_values"] == list(range(1, 11)) and len(selection["bic"]) == 10
    assert report["model"]["n_components"] == 4


def test_segment_uncertainty_and_anomaly_outputs(runner, photo, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["segment", str(photo), "-k", "4", "-o", str(out),
                                  "--save-uncertainty", "--save-anomaly",
                                  "--anomaly-quantile", "0.01"])
    assert result.exit_code == 0, result.output
    assert "anomalous 0.9" in result.stdout  # just under 1% of the pixels
    assert sorted(p.name for p in out.iterdir()) == [
        "photo_anomaly.png", "photo_anomaly_mask.png", "photo_labels.png", "photo_loglik.tif",
        "photo_overlay.png", "photo_regions.png", "photo_regions_overlay.png",
        "photo_report.json", "photo_uncertainty.png", "photo_uncertainty.tif"]
    mask = np.asarray(PILImage.open(out / "photo_anomaly_mask.png"))
    assert mask.shape == (48, 64) and set(np.unique(mask)) == {0, 255}
    report = json.loads((out / "photo_report.json").read_text())
    assert report["anomaly"]["pixels"] == np.count_nonzero(mask)
    assert report["anomaly"]["share"] == pytest.approx(np.count_nonzero(mask) / mask.size)
    # The maps count as outputs: an existing one stops the run without --overwrite.
    result = runner.invoke(main, ["segment", str(photo), "-o", str(out), "--save-anomaly"])
    assert result.exit_code == 1 and "output exists" in result.stderr
    result = runner.invoke(main, ["segment", str(photo), "-o", str(out), "--anomaly-threshold",
                                  "-1000", "--overwrite", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "photo_report.json").read_text())
    assert report["anomaly"]["threshold"] == -1000 and report["anomaly"]["pixels"] == 0


@pytest.fixture
def folder(photo, tmp_path):
    """photo.png, a copy in a subfolder, a grey image and a corrupt file."""
    root = photo.parent
    (root / "sub").mkdir()
    shutil.copy(photo, root / "sub" / "again.png")
    grey = np.random.default_rng(1).integers(0, 255, (32, 40), dtype=np.uint8)
    PILImage.fromarray(grey).save(root / "grey.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_batch_mirrors_the_tree_and_reports_failures(runner, folder, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["batch", str(folder), "-o", str(out), "-k", "3", "-r",
                                  "-j", "1"])
    assert result.exit_code == 1
    assert "error: broken.png:" in result.stderr and "Traceback" not in result.output
    assert "4 inputs: 3 segmented, 0 already complete, 1 failed" in result.stderr
    assert (out / "photo_labels.png").is_file() and (out / "sub" / "again_labels.png").is_file()
    for name in ("batch_summary.csv", "batch_summary.json", "index.html"):
        assert (out / name).is_file()
    rows = json.loads((out / "batch_summary.json").read_text())["rows"]
    assert {r["input"]: r["status"] for r in rows} == {
        "broken.png": "failed", "grey.png": "ok", "photo.png": "ok", "sub/again.png": "ok"}
    before = digest(out / "photo_labels.png")
    result = runner.invoke(main, ["batch", str(folder), "-o", str(out), "-k", "3", "-r",
                                  "-j", "1", "--resume"])
    assert "0 segmented, 3 already complete, 1 failed" in result.stderr
    assert digest(out / "photo_labels.png") == before


def test_batch_usage_errors(runner, folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["batch", str(empty), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no input images found" in result.output
    result = runner.invoke(main, ["batch", str(folder), "-o", str(tmp_path / "o"), "-k", "auto",
                                  "--shared-model"])
    assert result.exit_code == 2 and "--shared-model needs a fixed -k" in result.output
    result = runner.invoke(main, ["batch", str(folder), "-o", str(folder)])
    assert result.exit_code == 1


def test_fit_then_apply(runner, folder, tmp_path):
    model = tmp_path / "model.npz"
    result = runner.invoke(main, ["fit", str(folder / "photo.png"), str(folder / "sub" /
                                  "again.png"), "-k", "4", "-o", str(model)])
    assert result.exit_code == 0, result.output
    assert "4 components on features 'lab' from 2 of 2 inputs" in result.stdout
    out = tmp_path / "applied"
    result = runner.invoke(main, ["apply", str(model), str(folder / "photo.png"),
                                  str(folder / "grey.png"), "-o", str(out), "-j", "1"])
    assert result.exit_code == 1
    assert "grey.png: model expects 3 channels, image has 1" in result.stderr
    labels = np.asarray(PILImage.open(out / "photo_labels.png"))
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]
    result = runner.invoke(main, ["fit", str(folder / "photo.png"), "-o", str(model)])
    assert result.exit_code == 1 and "output exists" in result.stderr


def test_shared_model_resume_refuses_other_options(runner, folder, tmp_path):
    out = tmp_path / "out"
    args = ["batch", str(folder), "-o", str(out), "-j", "1", "--shared-model"]
    assert runner.invoke(main, args + ["-k", "2"]).exit_code == 1  # broken.png fails
    result = runner.invoke(main, args + ["-k", "3", "--resume"])
    assert result.exit_code == 1
    assert "shared model was fitted with -k 2 (this run: 3)" in result.stderr
    assert "Traceback" not in result.output


def test_fit_checks_its_output_before_working(runner, folder, tmp_path):
    result = runner.invoke(main, ["fit", str(folder / "photo.png"), "-o", str(tmp_path / "m.txt")])
    assert result.exit_code == 2 and ".npz or .json" in result.output
    target = tmp_path / "new" / "folder" / "m.json"
    result = runner.invoke(main, ["fit", str(folder / "photo.png"), "-k", "2", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["format"] == "gmmseg.GaussianMixture"


# --- one owner per value: the CLI's message for a bad value is the library's -------------


def _library_message(check, value, flag):
    with pytest.raises(ValueError) as info:
        check(value, flag)
    return str(info.value).removeprefix(f"{flag} ")


@pytest.mark.parametrize(
    "check, value, flag, args",
    [
        ("segment_count", "0", "-k", ["segment", "x.png", "-k", "0"]),
        ("segment_count", "0", "--k-max", ["select-k", "x.png", "--k-max", "0"]),
        ("segment_count", "0", "-k", ["fit", "x.png", "-k", "0", "-o", "m.npz"]),
        ("segment_count", "0", "-k", ["batch", "x", "-o", "out", "-k", "0"]),
        # Beyond what a uint16 label map holds: refused before any work.
        ("segment_count", "65536", "-k", ["segment", "x.png", "-k", "65536"]),
        ("segment_count", "70000", "-k", ["fit", "x.png", "-k", "70000", "-o", "m.npz"]),
        ("covariance_type", "wide", "--covariance-type",
         ["segment", "x.png", "--covariance-type", "wide"]),
        ("covariance_type", "wide", "--covariance-type",
         ["select-k", "x.png", "--covariance-type", "wide"]),
        ("criterion", "mdl", "--criterion", ["segment", "x.png", "--criterion", "mdl"]),
        ("region_mode", "many", "--regions", ["segment", "x.png", "--regions", "many"]),
        ("region_mode", "0", "--regions",
         ["apply", "m.npz", "x.png", "-o", "out", "--regions", "0"]),
        ("region_scale", "2", "--region-scale", ["segment", "x.png", "--region-scale", "2"]),
    ],
)
def test_bad_value_messages_come_from_the_librarys_one_check(runner, check, value, flag, args):
    import gmmseg.cli.options as options
    from gmmseg import mixture, pipeline, postprocess

    function = (getattr(mixture, f"check_{check}", None) or getattr(pipeline, f"check_{check}", None)
                or getattr(postprocess, f"check_{check}"))
    # The CLI holds no check of its own: it calls the very function the library uses ...
    assert getattr(options, f"check_{check}") is function
    # ... after turning the string into a number where the value is one.
    typed = int(value) if value.isdigit() and check != "region_scale" else (
        float(value) if check == "region_scale" else value)
    expected = _library_message(function, typed, flag)
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}'" in result.output or flag in result.output
    assert expected in " ".join(result.output.split())


def test_bad_feature_names_are_judged_by_the_feature_spec(runner):
    from gmmseg.features import parse_feature_spec

    with pytest.raises(ValueError) as info:
        parse_feature_spec("lab,bogus")
    for command in (["segment", "x.png"], ["select-k", "x.png"], ["batch", "x", "-o", "out"],
                    ["fit", "x.png", "-o", "m.npz"]):
        result = runner.invoke(main, [*command, "--features", "lab,bogus"])
        assert result.exit_code == 2
        assert str(info.value) in " ".join(result.output.split())


def test_library_hints_reach_the_terminal_as_flags(runner, photo, tmp_path):
    out = tmp_path / "out"
    assert runner.invoke(main, ["segment", str(photo), "-k", "2", "-o", str(out)]).exit_code == 0
    result = runner.invoke(main, ["segment", str(photo), "-k", "2", "-o", str(out)])
    assert result.exit_code == 1
    assert "output exists (use --overwrite)" in result.stderr
    assert "overwrite=True" not in result.stderr


# --- --help --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["segment", "select-k", "batch", "fit", "apply", "info"])
def test_help_groups_every_option_with_a_text_and_ends_with_examples(runner, command):
    result = runner.invoke(main, [command, "--help"], terminal_width=100)
    assert result.exit_code == 0
    text = result.output
    assert "Input options:" in text and "Other options:" in text
    assert text.rstrip().split("Examples:")[-1].strip().startswith(f"gmmseg {command}")
    # Every option of the command has a help text (no bare "--max-iter INTEGER" line).
    for param in main.commands[command].params:
        if param.param_type_name == "option":
            assert param.help, f"{command} {param.opts[0]} has no help text"
    sections = [line for line in text.splitlines() if line.endswith("options:")]
    order = ["Input", "Model", "Output", "Regions and maps", "Performance", "Other"]
    assert [s.split(" options:")[0] for s in sections] == [
        o for o in order if f"{o} options:" in text]


def test_command_list_shows_each_first_sentence_in_full(runner):
    result = runner.invoke(main, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    commands = " ".join(result.output.split("Commands:")[1].split())
    assert "..." not in commands and "(same labels, same classes)." in commands and "_GMMSEG_COMPLETE=bash_source" in result.output


def test_shell_completion_offers_options_and_the_librarys_choices(runner):
    env = {"_GMMSEG_COMPLETE": "bash_complete", "COMP_WORDS": "gmmseg segment x.png --covariance-type ",
           "COMP_CWORD": "4"}
    result = runner.invoke(main, [], prog_name="gmmseg", env=env)
    assert result.output.split() == ["plain,full", "plain,tied", "plain,diag", "plain,spherical"]
    env.update(COMP_WORDS="gmmseg segment x.png --save-unc", COMP_CWORD="3")
    assert runner.invoke(main, [], prog_name="gmmseg", env=env).output.split() == [
        "plain,--save-uncertainty"]
