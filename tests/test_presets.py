"""Tests of presets (gmmseg.presets, segment(preset=), --preset), masks and the t1 outputs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import gmmseg
from gmmseg.cli import main
from gmmseg.errors import GmmsegError, ImageReadError
from gmmseg.presets import PRESETS, check_preset

sys.path.insert(0, str(Path(__file__).parent))
from test_tissue import brain_phantom, scan

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
nib = pytest.importorskip("nibabel")


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    """A skull-stripped phantom brain as NIfTI (2 mm voxels), its truth and its mask file."""
    fractions, mask = brain_phantom(size=32)
    image = scan(fractions, mask, noise=2.0)
    folder = tmp_path_factory.mktemp("brain")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    path = folder / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(image, (2, 1, 0)), affine), path)
    mask_path = folder / "brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(mask, (2, 1, 0)).astype(np.uint8), affine), mask_path)
    return path, mask_path, fractions, mask


def nuclei_dice(seg):
    truth = gmmseg.read_image(SAMPLES / "nuclei_mask.tif").data[..., 0] > 0
    fg = seg.labels == 1
    return 2 * np.sum(fg & truth) / (fg.sum() + truth.sum())


# ----- the table and its checks ------------------------------------------

def test_every_preset_has_a_summary_and_settings_segment_takes():
    import inspect

    from gmmseg.pipeline.tissue import segment_tissue

    params = set(inspect.signature(gmmseg.segment).parameters)
    tissue = set(inspect.signature(segment_tissue).parameters)
    assert {"bias_field", "partial_volume", "knot_distance", "denoise"} <= tissue
    params |= tissue
    assert {"photo", "fluorescence", "t1"} <= set(PRESETS)
    for preset in PRESETS.values():
        assert preset.summary and "\n" not in preset.summary
        assert set(preset.settings) <= params
        assert preset.method in ("mixture", "tissue")


def test_auto_picks_no_preset_where_the_file_does_not_say_what_it_is():
    from gmmseg.presets import auto_preset

    ct = gmmseg.read_image(Path(__file__).parent / "data" / "ct_small.dcm")
    assert ct.meta["modality"] == "CT" and auto_preset(ct) is None   # no measured CT preset
    img = np.zeros((16, 16), np.uint8)
    img[:, 8:] = 9
    assert gmmseg.segment(img, 2, preset="auto").info.get("preset") is None


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="preset must be one of photo, fluorescence, t1, got 'ct'"):
        check_preset("ct")
    with pytest.raises(ValueError, match="preset must be one of"):
        gmmseg.segment(np.zeros((8, 8), np.uint8), preset="nope")


def test_presets_command_lists_one_line_each(runner):
    result = runner.invoke(main, ["presets"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert "features=contrast" in lines[1]


def test_unknown_preset_on_the_command_line_is_a_one_line_usage_error(runner):
    result = runner.invoke(main, ["segment", str(SAMPLES / "nuclei.tif"), "--preset", "xray"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    expected = ("error: Invalid value for '--preset': must be one of photo, fluorescence, t1, "
                "got 'xray'")
    assert errors == [expected]


# ----- values: the preset's, unless given --------------------------------

def test_fluorescence_preset_alone_reaches_the_nuclei_dice():
    seg = gmmseg.segment(gmmseg.read_image(SAMPLES / "nuclei.tif"), preset="fluorescence")
    assert seg.n_components == 2 and seg.features.spec_string == "contrast"
    assert nuclei_dice(seg) >= 0.88
    assert seg.info["preset"] == {
        "name": "fluorescence", "method": "mixture",
        "settings": {"n_components": 2, "features": "contrast", "smoothing": 1.0},
        "overridden": {}}


def test_arguments_given_explicitly_win_over_the_preset():
    img = gmmseg.read_image(SAMPLES / "nuclei.tif")
    seg = gmmseg.segment(img, 3, preset="fluorescence", smoothing=0.0)
    assert seg.n_components == 3 and seg.info["smoothing"] == 0.0
    assert seg.features.spec_string == "contrast"
    assert seg.info["preset"]["overridden"] == {"n_components": 2, "smoothing": 1.0}
    assert seg.info["preset"]["settings"] == {"features": "contrast"}


def test_command_line_options_given_win_and_defaults_do_not(runner, tmp_path):
    nuclei = str(SAMPLES / "nuclei.tif")
    assert runner.invoke(main, ["segment", nuclei, "--preset", "fluorescence", "-o",
                                str(tmp_path / "a"), "-q"]).exit_code == 0
    report = json.loads((tmp_path / "a" / "nuclei_report.json").read_text())
    assert report["model"]["n_components"] == 2 and report["smoothing"] == 1.0
    assert report["preset"]["name"] == "fluorescence"
    assert runner.invoke(main, ["segment", nuclei, "--preset", "fluorescence", "-k", "3",
                                "--smooth", "0", "-o", str(tmp_path / "b"), "-q"]).exit_code == 0
    report = json.loads((tmp_path / "b" / "nuclei_report.json").read_text())
    assert report["model"]["n_components"] == 3 and report["smoothing"] == 0.0
    assert report["preset"]["overridden"] == {"n_components": 2, "smoothing": 1.0}


def test_tissue_options_need_a_tissue_preset():
    img = np.zeros((8, 8), np.uint8)
    with pytest.raises(TypeError, match="bias_field: options of the tissue method"):
        gmmseg.segment(img, bias_field=False)
    with pytest.raises(TypeError, match="runs the feature mixture"):
        gmmseg.segment(img, preset="photo", partial_volume=False)


def test_t1_refuses_what_it_does_not_use(brain):
    path = brain[0]
    with pytest.raises(ValueError, match="does not take covariance_type, features"):
        gmmseg.segment(path, preset="t1", features="gray", covariance_type="diag")


def test_fit_and_select_k_refuse_the_tissue_preset(runner, tmp_path):
    nuclei = str(SAMPLES / "nuclei.tif")
    for args in (["fit", nuclei, "-o", str(tmp_path / "m.npz")], ["select-k", nuclei]):
        result = runner.invoke(main, [*args, "--preset", "t1"])
        assert result.exit_code == 2
        assert "preset 't1' runs the tissue method" in result.output
    result = runner.invoke(main, ["fit", nuclei, "-o", str(tmp_path / "m.npz"), "--preset",
                                  "fluorescence"])
    assert result.exit_code == 0, result.output
    assert "2 components on features 'contrast'" in result.output


def test_batch_passes_the_preset_to_every_input(runner, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "cells.tif").write_bytes((SAMPLES / "nuclei.tif").read_bytes())
    result = runner.invoke(main, ["batch", str(inputs), "-o", str(tmp_path / "out"), "-j", "1",
                                  "--preset", "fluorescence", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "cells_report.json").read_text())
    assert report["preset"]["name"] == "fluorescence"
    assert report["model"]["n_components"] == 2


# ----- t1 and masks ------------------------------------------------------

def test_t1_writes_labels_fractions_bias_and_restored_image(runner, brain, tmp_path):
    path, _, fractions, mask = brain
    result = runner.invoke(main, ["segment", str(path), "--preset", "t1", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["brain_bias.nii.gz", "brain_labels.lut", "brain_labels.nii.gz",
                     "brain_labels.txt", "brain_overlay.png", "brain_pve.nii.gz",
                     "brain_report.json", "brain_restored.nii.gz"]
    report = json.loads((tmp_path / "brain_report.json").read_text())
    assert report["preset"]["settings"]["mask"] == "nonzero"
    assert report["tissue"]["partial_volume"] is True
    assert set(report["outputs"]) == {"labels", "labels_itksnap", "labels_lut", "overlay",
                                      "report", "pve", "bias", "restored"}
    pve = nib.load(tmp_path / "brain_pve.nii.gz").get_fdata()
    assert pve.shape[:3] == mask.shape[::-1] and pve.shape[-1] == 3
    # Fraction-weighted volumes: the true tissue volumes (2 mm voxels: 0.008 mL each).
    truth_ml = fractions[:, mask].sum(axis=1) * 0.008
    got = [row["pv_volume_ml"] for row in report["segments"]]
    np.testing.assert_allclose(got, truth_ml, rtol=0.05)


def test_t1_leaves_out_the_zero_background_and_takes_a_mask_file(brain):
    path, mask_path, fractions, mask = brain
    seg = gmmseg.segment(path, preset="t1")
    assert np.array_equal(seg.valid, mask)           # background is 0 in the file
    smaller = gmmseg.segment(path, preset="t1", mask=mask_path)
    assert np.array_equal(smaller.valid, mask)
    truth = fractions.argmax(axis=0)
    assert np.mean(seg.labels[mask] == truth[mask]) > 0.95
    stats = seg.stats()
    assert [row["pixels"] for row in stats] == [int(np.sum(seg.labels == k)) for k in range(3)]
    assert sum(row["pv_voxels"] for row in stats) == pytest.approx(mask.sum(), rel=1e-5)


def test_mask_file_on_another_grid_is_a_one_line_error(runner, brain, tmp_path):
    path = brain[0]
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7), np.uint8), np.eye(4)), other)
    with pytest.raises(ImageReadError, match=r"other.nii.gz: mask has shape \(7, 6, 5\)"):
        gmmseg.segment(path, preset="t1", mask=other)
    result = runner.invoke(main, ["segment", str(path), "--preset", "t1", "--mask", str(other),
                                  "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "give a mask on the image's grid" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_mask_rules_and_arrays():
    img = np.kron(np.array([[0, 5, 7], [0, 0, 9]], np.uint8), np.ones((4, 4), np.uint8))
    seg = gmmseg.segment(img, 2, mask="nonzero")
    assert seg.labels[0, 0] == -1 and (seg.labels >= 0).sum() == 3 * 16
    with pytest.raises(ImageReadError, match="everything: mask file not found .* 'nonzero'"):
        gmmseg.segment(img, 2, mask="everything")
    with pytest.raises(ValueError, match="a file or one of 'nonzero'"):
        gmmseg.segment(img, 2, mask=np.ones((2, 2), bool))
    with pytest.raises(GmmsegError, match="no valid pixels"):
        gmmseg.segment(img, 2, mask=np.zeros(img.shape, bool))
