"""Tests of the medical and geospatial formats: DICOM, NIfTI, GeoTIFF in, results in their geometry out.

Real files from tests/data/ (see LICENSES.md there) are read in place; every
output goes to ``tmp_path``. Needs the ``medical`` and ``geo`` extras
(``pip install -e '.[all,test]'``).
"""

import gzip
import math
import re
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sklearn.metrics import adjusted_rand_score

import gmmseg
from gmmseg.cli import main
from gmmseg.errors import ImageReadError, OutputExistsError
from gmmseg.io import (
    Image,
    describe,
    parse_bands,
    read_image,
    result_suffix,
    write_result_map,
)

# The readers under test are optional extras ('gmmseg[medical,geo]'): without
# them this module is skipped, not failed.
nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
rasterio = pytest.importorskip("rasterio")

DATA = Path(__file__).resolve().parent / "data"
SIX_BAND = DATA / "landsat7_etm_6band.tif"
RGB_NODATA = DATA / "landsat7_rgb_nodata.tif"
CT = DATA / "ct_small.dcm"
MR_SERIES = DATA / "mr_series"
ANATOMICAL = DATA / "anatomical.nii"


@pytest.fixture
def runner():
    return CliRunner()


def _one_line_error(match, func, *args, **kwargs):
    with pytest.raises(ImageReadError, match=match) as excinfo:
        func(*args, **kwargs)
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def _files(folder):
    return sorted(p.name for p in Path(folder).iterdir()) if Path(folder).exists() else []


def _normal_distance(ds):
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    return float(np.array(ds.ImagePositionPatient, dtype=float) @ np.cross(iop[:3], iop[3:]))


# --------------------------------------------------------------------------
# GeoTIFF


def test_six_band_geotiff_segments_end_to_end(tmp_path):
    img = read_image(SIX_BAND)
    with rasterio.open(SIX_BAND) as src:
        np.testing.assert_array_equal(img.data, np.moveaxis(src.read(), 0, -1))
        crs, transform, size = src.crs, src.transform, (src.width, src.height)
    assert img.data.shape == (352, 349, 6) and img.data.dtype == np.uint8
    assert img.channels == tuple(f"band{i}" for i in range(1, 7))
    assert img.valid.all() and img.spacing == pytest.approx((28.5, 28.5))
    assert img.meta["format"] == "geotiff" and img.meta["crs_name"] == "EPSG:31985"

    seg = gmmseg.segment(img, 4, random_state=0)
    paths = seg.save(tmp_path, proba=True)
    assert paths["labels"].name == "landsat7_etm_6band_labels.tif"
    assert paths["proba"].name == "landsat7_etm_6band_proba.tif"
    with rasterio.open(paths["labels"]) as out:
        assert (out.crs, out.transform, (out.width, out.height)) == (crs, transform, size)
        assert out.count == 1 and out.dtypes == ("uint8",) and out.nodata == 255
        np.testing.assert_array_equal(out.read(1), seg.labels)
    with rasterio.open(paths["proba"]) as out:
        assert out.count == 4 and out.dtypes[0] == "float32" and math.isnan(out.nodata)
        assert out.crs == crs and out.transform == transform
        np.testing.assert_allclose(np.moveaxis(out.read(), 0, -1), seg.proba)
    assert not [name for name in _files(tmp_path) if name.startswith(".")]  # no temporaries left


def test_nodata_geotiff_through_the_cli_keeps_geometry_and_nodata(runner, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, ["segment", str(RGB_NODATA), "-k", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert _files(out) == ["landsat7_rgb_nodata_labels.tif",
                           "landsat7_rgb_nodata_labels.tif.aux.xml",
                           "landsat7_rgb_nodata_overlay.png", "landsat7_rgb_nodata_report.json"]
    with rasterio.open(RGB_NODATA) as src:
        pixels = src.read()
        crs, transform, size, nodata = src.crs, src.transform, (src.width, src.height), src.nodata
    none_valid = np.all(pixels == nodata, axis=0)  # no band holds data there
    assert 0.2 < none_valid.mean() < 0.5  # the black frame around the rotated footprint
    with rasterio.open(out / "landsat7_rgb_nodata_labels.tif") as labels:
        assert (labels.crs, labels.transform, (labels.width, labels.height)) == (crs, transform, size)
        assert labels.nodata == 255
        values = labels.read(1)
        np.testing.assert_array_equal(values == 255, none_valid)
        np.testing.assert_array_equal(labels.read_masks(1) == 0, none_valid)
    assert set(np.unique(values[~none_valid])) == {0, 1, 2}


def test_bands_are_chosen_by_gdal_number():
    img = read_image(SIX_BAND, bands="4,3,2")
    with rasterio.open(SIX_BAND) as src:
        np.testing.assert_array_equal(img.data, np.moveaxis(src.read([4, 3, 2]), 0, -1))
    assert img.channels == ("band4", "band3", "band2") and img.meta["bands"] == (4, 3, 2)
    assert read_image(SIX_BAND, bands=[5]).data.shape == (352, 349, 1)
    assert parse_bands(" 4, 3,2") == (4, 3, 2)
    _one_line_error("band 7 does not exist; the file has 6 band", read_image, SIX_BAND, bands=(2, 7))
    with pytest.raises(ValueError, match="numbered from 1"):
        read_image(SIX_BAND, bands=(0,))
    with pytest.raises(ValueError, match="4,3,2"):
        parse_bands("red,green")


def test_nodata_option_replaces_the_files_nodata():
    default = read_image(RGB_NODATA)
    override = read_image(RGB_NODATA, nodata=255)
    with rasterio.open(RGB_NODATA) as src:
        pixels = src.read()
    np.testing.assert_array_equal(default.valid, np.any(pixels != 0, axis=0))
    np.testing.assert_array_equal(override.valid, np.any(pixels != 255, axis=0))
    assert override.meta["nodata"] == 255 and default.meta["nodata"] == 0


def test_float_maps_and_many_labels_as_geotiff(tmp_path):
    img = read_image(RGB_NODATA)
    rng = np.random.default_rng(0)
    labels = np.where(img.valid, rng.integers(0, 300, img.spatial_shape), -1).astype(np.int32)
    write_result_map(tmp_path / "many.tif", labels, img, n_components=300)
    with rasterio.open(tmp_path / "many.tif") as out:
        assert out.dtypes == ("uint16",) and out.nodata == 65535
        np.testing.assert_array_equal(out.read(1), np.where(labels >= 0, labels, 65535))
    loglik = np.where(img.valid, -1.5, np.nan).astype(np.float32)
    write_result_map(tmp_path / "loglik.tif", loglik, img)
    with rasterio.open(tmp_path / "loglik.tif") as out:
        band = out.read(1)
        assert out.dtypes == ("float32",) and math.isnan(out.nodata)
        np.testing.assert_array_equal(np.isnan(band), ~img.valid)
    with pytest.raises(OutputExistsError):
        write_result_map(tmp_path / "loglik.tif", loglik, img)


# --------------------------------------------------------------------------
# DICOM


def test_ct_slice_is_in_hounsfield_units():
    img = read_image(CT)
    ds = pydicom.dcmread(CT)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert img.data.shape == (128, 128, 1) and img.channels == ("gray",)
    np.testing.assert_array_equal(img.data[..., 0], expected)
    assert img.data.min() < 0  # air and fat are negative HU
    assert img.meta["units"] == "HU" and img.meta["format"] == "dicom"
    assert img.spacing == pytest.approx(tuple(float(s) for s in ds.PixelSpacing))
    assert result_suffix(img, "labels") == ".nii.gz"


def test_mr_series_is_a_volume_in_slice_position_order(tmp_path):
    # File names in the opposite order of the slice positions: names must not matter.
    files = sorted(MR_SERIES.iterdir(), key=lambda p: -_normal_distance(pydicom.dcmread(p)))
    folder = tmp_path / "series"
    folder.mkdir()
    for name, file in zip(["a.dcm", "b.dcm"], files):
        shutil.copy(file, folder / name)
    (folder / "README.txt").write_text("not DICOM\n")

    img = read_image(folder)
    datasets = sorted((pydicom.dcmread(f) for f in files), key=_normal_distance)
    assert img.data.shape == (2, 256, 256, 1) and img.is_volume
    for k, ds in enumerate(datasets):
        np.testing.assert_array_equal(img.data[k, ..., 0], ds.pixel_array)
    step = _normal_distance(datasets[1]) - _normal_distance(datasets[0])
    row, col = (float(s) for s in datasets[0].PixelSpacing)
    assert step == pytest.approx(3.0, abs=1e-3)
    assert img.spacing == pytest.approx((step, row, col))
    # The affine puts voxel (i, j, k) = (column, row, slice) at the files' positions (RAS = -L, -P, S).
    affine = img.meta["affine"]
    for k, ds in enumerate(datasets):
        ras = affine @ [0, 0, k, 1]
        np.testing.assert_allclose(ras[:3] * [-1, -1, 1], np.array(ds.ImagePositionPatient, float),
                                   atol=1e-6)
    iop = np.array(datasets[0].ImageOrientationPatient, float)
    lps_step_along_row = (affine @ [1, 0, 0, 1] - affine @ [0, 0, 0, 1])[:3] * [-1, -1, 1]
    np.testing.assert_allclose(lps_step_along_row, iop[:3] * col, atol=1e-6)
    assert img.name == "series"


def test_mr_series_labels_overlay_the_input(tmp_path):
    seg = gmmseg.segment(MR_SERIES, 3, random_state=0)
    paths = seg.save(tmp_path)
    assert paths["labels"].name == "mr_series_labels.nii.gz"
    out = nib.load(paths["labels"])
    assert out.shape == (256, 256, 2) and out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, seg.image.meta["affine"], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.dataobj).transpose(2, 1, 0), seg.labels)
    assert out.header.get_intent()[0] == "label"
    assert seg.overlay().shape == (256, 256, 3)


def test_several_series_in_one_folder_need_a_choice(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for file in MR_SERIES.iterdir():
        shutil.copy(file, folder / f"mr_{file.name}")
    shutil.copy(CT, folder / "ct.dcm")
    mr_uid = str(pydicom.dcmread(MR_SERIES / "0.dcm").SeriesInstanceUID)
    ct_uid = str(pydicom.dcmread(CT).SeriesInstanceUID)
    message = _one_line_error("holds 2 DICOM series", read_image, folder)
    assert f"{mr_uid} (2 images" in message and f"{ct_uid} (1 image," in message
    assert "series=UID" in message and "--series" not in message  # the CLI says --series
    assert read_image(folder, series=mr_uid).data.shape == (2, 256, 256, 1)
    assert read_image(folder, series=ct_uid).data.shape == (128, 128, 1)
    _one_line_error("no DICOM series '1.2.3'", read_image, folder, series="1.2.3")


def test_compressed_dicom_without_a_decoder_names_the_package(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    try:
        from pydicom.pixels import get_decoder

        if get_decoder(JPEGLSLossless).is_available:
            pytest.skip("a JPEG-LS decoder is installed here")
    except ImportError:  # pydicom 2
        pass
    ds = pydicom.dcmread(CT)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(64)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = tmp_path / "jpegls.dcm"
    ds.save_as(path)
    message = _one_line_error("jpegls.dcm: DICOM pixel data is compressed", read_image, path)
    assert "pip install pylibjpeg" in message and "gdcm" in message


# --------------------------------------------------------------------------
# NIfTI


def test_anatomical_nifti_round_trips_with_its_affine(tmp_path):
    src = nib.load(ANATOMICAL)
    img = read_image(ANATOMICAL)
    assert img.data.shape == (25, 41, 33, 1) and img.data.dtype == np.int16
    assert img.data.dtype.isnative  # the file is big-endian
    np.testing.assert_array_equal(img.data[..., 0], np.asarray(src.dataobj).transpose(2, 1, 0))
    assert img.spacing == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(img.meta["affine"], src.affine)

    seg = gmmseg.segment(img, 3, random_state=0)
    paths = seg.save(tmp_path, log_likelihood=True)
    assert paths["labels"].name == "anatomical_labels.nii.gz"
    with gzip.open(paths["labels"]) as f:
        assert f.read(348)[344:348] == b"n+1\x00"
    out = nib.load(paths["labels"])
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
    assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (
        int(src.header["sform_code"]), int(src.header["qform_code"]))
    np.testing.assert_array_equal(np.asarray(out.dataobj).transpose(2, 1, 0), seg.labels)
    loglik = nib.load(paths["log_likelihood"])
    assert loglik.shape == src.shape and loglik.get_data_dtype() == np.float32
    assert seg.overlay().shape == (41, 33, 3)


def test_one_volume_of_a_4d_nifti(tmp_path):
    rng = np.random.default_rng(0)
    series = rng.normal(size=(5, 6, 4, 3)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(series, affine), path)
    np.testing.assert_array_equal(read_image(path).data[..., 0], series[..., 0].transpose(2, 1, 0))
    img = read_image(path, volume=2)
    np.testing.assert_array_equal(img.data[..., 0], series[..., 2].transpose(2, 1, 0))
    assert img.spacing == (3.0, 1.5, 1.5) and img.meta["n_volumes"] == 3
    assert "volume 2 of 3" in describe(img)
    _one_line_error("volume 3 does not exist; the file holds 3 volume", read_image, path, volume=3)


def test_nested_ellipsoid_phantom_is_segmented_as_a_volume(tmp_path):
    """Three tissue classes in a 40 x 64 x 64 volume with 2.5 mm slices, through a NIfTI file."""
    shape, spacing = (40, 64, 64), (2.5, 1.0, 1.0)
    z, y, x = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    truth = np.zeros(shape, np.int32)
    truth[(xx / 28) ** 2 + (yy / 26) ** 2 + (zz / 40) ** 2 < 1] = 1
    truth[(xx / 14) ** 2 + (yy / 11) ** 2 + (zz / 22) ** 2 < 1] = 2
    rng = np.random.default_rng(0)
    volume = (np.array([0.1, 0.5, 0.9])[truth] + rng.normal(0, 0.08, shape)).astype(np.float32)
    affine = np.array([[-1.0, 0, 0, 30], [0, 1.0, 0, -20], [0, 0, 2.5, -50], [0, 0, 0, 1]])
    path = tmp_path / "phantom.nii.gz"
    nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), affine), path)

    img = read_image(path)
    assert img.data.shape == shape + (1,) and img.spacing == spacing
    seg = gmmseg.segment(img, 3, random_state=0)
    assert seg.labels.shape == shape
    assert adjusted_rand_score(truth.ravel(), seg.labels.ravel()) >= 0.95
    assert seg.overlay().shape == (64, 64, 3)
    assert seg.overlay(slice_index=0).shape == (64, 64, 3)
    paths = seg.save(tmp_path / "out")
    out = nib.load(paths["labels"])
    np.testing.assert_allclose(out.affine, affine)
    labels = np.asarray(out.dataobj).transpose(2, 1, 0)
    assert adjusted_rand_score(truth.ravel(), labels.ravel()) >= 0.95


# --------------------------------------------------------------------------
# info, missing extras, bad inputs


def test_describe_says_what_the_reader_sees():
    # Axes named, in the order of the format's own tools: gdalinfo "Size is 791, 718" and
    # "Pixel Size = (300.04, -300.04)"; fslinfo / nibabel x, y, z; DICOM Rows, Columns.
    text = describe(read_image(RGB_NODATA))
    assert text.startswith("raster 791 x 718 pixels (width x height), pixel size 300 x 300 "
                           "metre (x, y), 3 channels R,G,B, uint8")
    assert "crs EPSG:32618" in text and "nodata 0" in text
    assert re.search(r"valid \d+\.\d%", text) and text.endswith("format geotiff")
    text = describe(read_image(ANATOMICAL))
    assert text.startswith("volume 33 x 41 x 25 voxels (x, y, z), 2 x 2 x 2 mm,")
    text = describe(read_image(CT))
    assert text.startswith("image 128 x 128 (rows x columns), pixel spacing 0.6615 x 0.6615 mm "
                           "(rows, columns),")
    assert "range -" in text and "HU" in text and "CT" in text and "format dicom" in text
    assert "\n" not in text
    text = describe(read_image(MR_SERIES))
    assert text.startswith("volume 256 x 256 x 2 (rows x columns x slices), pixel spacing "
                           "1.797 x 1.797 mm (rows, columns), slices 3 mm apart,")


@pytest.mark.parametrize(
    ("module", "path", "what", "extra"),
    [
        ("pydicom", CT, "reading DICOM", "medical"),
        ("pydicom", MR_SERIES, "reading a DICOM series", "medical"),
        ("nibabel", ANATOMICAL, "reading NIfTI", "medical"),
        ("rasterio", SIX_BAND, "reading GeoTIFF", "geo"),
    ],
)
def test_missing_extra_gives_the_install_command(monkeypatch, module, path, what, extra):
    monkeypatch.setitem(sys.modules, module, None)
    message = _one_line_error(re.escape(path.name), read_image, path)
    assert what in message and f"needs {module}" in message
    assert message.endswith(f"install it with: pip install 'gmmseg[{extra}]'")


def _bad_inputs(folder):
    """The four bad inputs of the issue, by file name, with the problem their error names."""
    folder.mkdir()
    series = folder / "empty_series"
    series.mkdir()
    (series / "notes.txt").write_text("no images here\n")
    data = CT.read_bytes()
    (folder / "corrupt.dcm").write_bytes(data[: len(data) // 2])
    header = bytearray(ANATOMICAL.read_bytes())
    header[70:72] = struct.pack(">h", 999)  # datatype code that does not exist
    (folder / "broken.nii").write_bytes(bytes(header))
    with rasterio.open(RGB_NODATA) as src:
        profile = src.profile
    with rasterio.open(folder / "all_nodata.tif", "w", **profile) as dst:
        dst.write(np.zeros((profile["count"], profile["height"], profile["width"]), np.uint8))
    return {
        "empty_series": "no dicom image (among 1 file); for a folder of image files, use "
                        "gmmseg batch",
        "corrupt.dcm": "truncated or corrupt",
        "broken.nii": "broken nifti header",
        "all_nodata.tif": "no valid pixels",
    }


def test_bad_inputs_get_one_line_errors_exit_1_and_write_nothing(runner, tmp_path):
    expected = _bad_inputs(tmp_path / "bad")
    out = tmp_path / "out"
    for name, problem in expected.items():
        path = tmp_path / "bad" / name
        result = runner.invoke(main, ["segment", str(path), "-k", "3", "-o", str(out)])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and name in errors[0] and problem in errors[0].lower(), result.stderr
        assert _files(out) == []
    assert "nodata=0" in _one_line_error("all_nodata.tif", read_image, tmp_path / "bad" / "all_nodata.tif")


def test_empty_folder_and_other_dicom_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error("empty: a folder is read as one DICOM series, and this one holds no file",
                    read_image, empty)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(bytes(128) + b"DICM" + bytes(64))
    _one_line_error("garbage.dcm: truncated or corrupt DICOM", read_image, garbage)
    broken = bytearray(ANATOMICAL.read_bytes())
    broken[344:348] = b"xxxx"
    (tmp_path / "magic.nii").write_bytes(bytes(broken))
    _one_line_error("magic.nii: broken NIfTI header", read_image, tmp_path / "magic.nii")
    (tmp_path / "cut.nii").write_bytes(ANATOMICAL.read_bytes()[:20_000])
    _one_line_error("cut.nii: truncated or corrupt NIfTI", read_image, tmp_path / "cut.nii")


def test_volume_results_refuse_to_overwrite(tmp_path):
    img = read_image(ANATOMICAL)
    labels = np.zeros(img.spatial_shape, np.int32)
    target = tmp_path / "labels.nii.gz"
    write_result_map(target, labels, img, n_components=2)
    before = target.read_bytes()
    with pytest.raises(OutputExistsError):
        write_result_map(target, labels + 1, img, n_components=2)
    assert target.read_bytes() == before
    write_result_map(target, labels + 1, img, n_components=2, overwrite=True)
    assert np.all(np.asarray(nib.load(target).dataobj) == 1)
    assert _files(tmp_path) == ["labels.nii.gz"]


def test_photos_still_get_png_labels():
    photo = Image(np.zeros((4, 5, 3), np.uint8), np.ones((4, 5), bool), channels=("R", "G", "B"))
    assert result_suffix(photo, "labels") == ".png" and result_suffix(photo, "float") == ".tif"
    stack = Image(np.zeros((2, 4, 5, 1), np.uint16), np.ones((2, 4, 5), bool))
    assert result_suffix(stack, "labels") == ".tif"


# --------------------------------------------------------------------------
# Outputs that open well in the user's own tools


def _gdal():
    """The GDAL library rasterio loaded (to read back what QGIS reads), or skip."""
    import ctypes
    import glob
    import os

    found = glob.glob(os.path.dirname(rasterio.__file__) + ".libs/libgdal*")
    if not found:
        pytest.skip("rasterio's bundled libgdal not found")
    lib = ctypes.CDLL(found[0])
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    for name, res, args in [
        ("GDALOpen", vp, [cp, ctypes.c_int]), ("GDALGetRasterBand", vp, [vp, ctypes.c_int]),
        ("GDALGetGeoTransform", ctypes.c_int, [vp, ctypes.POINTER(ctypes.c_double * 6)]),
        ("GDALGetRasterCategoryNames", ctypes.POINTER(cp), [vp]),
        ("GDALGetDefaultRAT", vp, [vp]), ("GDALRATGetRowCount", ctypes.c_int, [vp]),
        ("GDALRATGetColumnCount", ctypes.c_int, [vp]),
        ("GDALRATGetNameOfCol", cp, [vp, ctypes.c_int]),
        ("GDALRATGetValueAsString", cp, [vp, ctypes.c_int, ctypes.c_int]),
        ("GDALClose", None, [vp])]:
        getattr(lib, name).restype, getattr(lib, name).argtypes = res, args
    lib.GDALAllRegister()
    return lib


def test_label_geotiff_has_the_overlay_colours_and_named_categories_for_qgis(tmp_path):
    img = read_image(RGB_NODATA)
    seg = gmmseg.segment(img, 3, random_state=0)
    paths = seg.save(tmp_path)
    assert paths["labels_aux"].name == "landsat7_rgb_nodata_labels.tif.aux.xml"
    colours = gmmseg.postprocess.segment_colors(3)
    with rasterio.open(paths["labels"]) as out:
        table = out.colormap(1)
        assert [table[k][:3] for k in range(3)] == [tuple(c) for c in colours.tolist()]
        assert table[0][3] == 255 and table[255] == (0, 0, 0, 0)  # nodata: transparent
        assert out.nodata == 255
        np.testing.assert_array_equal(out.read(1), np.where(seg.valid, seg.labels, 255))
    # What QGIS reads through GDAL: category names (labels of the colour-table classes)
    # and the raster attribute table. GDAL loads a GeoTIFF's side file with its
    # georeferencing, which every GIS asks for first.
    import ctypes

    lib = _gdal()
    ds = lib.GDALOpen(str(paths["labels"]).encode(), 0)
    try:
        lib.GDALGetGeoTransform(ds, ctypes.byref((ctypes.c_double * 6)()))
        band = lib.GDALGetRasterBand(ds, 1)
        names, i = [], 0
        categories = lib.GDALGetRasterCategoryNames(band)
        while categories[i]:
            names.append(categories[i].decode())
            i += 1
        assert names == ["segment 0 (darkest)", "segment 1", "segment 2 (brightest)"]
        rat = lib.GDALGetDefaultRAT(band)
        columns = [lib.GDALRATGetNameOfCol(rat, c).decode()
                   for c in range(lib.GDALRATGetColumnCount(rat))]
        assert columns == ["Value", "Name", "Red", "Green", "Blue", "Alpha", "Pixels",
                           "Area (m^2)", "Hectares"]
        assert lib.GDALRATGetRowCount(rat) == 3
        stats = seg.stats()
        for k in range(3):
            row = [lib.GDALRATGetValueAsString(rat, k, c).decode() for c in range(len(columns))]
            assert row[:7] == [str(k), names[k], *map(str, colours[k]), "255",
                               str(stats[k]["pixels"])]
            assert float(row[8]) == pytest.approx(stats[k]["hectares"])
    finally:
        lib.GDALClose(ds)


def test_stats_report_and_pixel_size_are_in_physical_units(tmp_path):
    from gmmseg.io import pixel_size

    size = pixel_size(read_image(RGB_NODATA))
    assert size["units"] == "m^2" and size["per_pixel"] == pytest.approx(300.04**2, rel=1e-4)
    assert size["hectares_per_pixel"] == pytest.approx(size["per_pixel"] / 1e4)
    seg = gmmseg.segment(read_image(RGB_NODATA), 2, random_state=0)
    stats = seg.stats()
    assert sum(s["pixels"] for s in stats) == int(seg.valid.sum())
    for s in stats:
        assert s["units"] == "m^2" and s["area"] == pytest.approx(s["pixels"] * size["per_pixel"])
        assert s["hectares"] == pytest.approx(s["area"] / 1e4)
    # A geographic CRS: square degrees, no hectares.
    geo = tmp_path / "geographic.tif"
    with rasterio.open(geo, "w", driver="GTiff", width=8, height=6, count=1, dtype="uint8",
                       crs="EPSG:4326",
                       transform=rasterio.Affine(0.01, 0, 10, 0, -0.02, 50)) as dst:
        dst.write(np.arange(48, dtype=np.uint8).reshape(1, 6, 8))
    assert pixel_size(read_image(geo)) == pytest.approx(
        {"measure": "area", "units": "degree^2", "per_pixel": 0.0002})
    # Volumes: mm^3 and millilitres; NIfTI voxel sizes in microns are converted.
    img = read_image(ANATOMICAL)
    assert pixel_size(img) == {"measure": "volume", "units": "mm^3", "per_pixel": 8.0,
                               "millilitres_per_pixel": 0.008}
    micron = tmp_path / "micron.nii.gz"
    nifti = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.diag([500.0, 500, 2000, 1]))
    nifti.header.set_xyzt_units("micron")
    nib.save(nifti, micron)
    assert pixel_size(read_image(micron))["per_pixel"] == pytest.approx(0.5 * 0.5 * 2.0)
    series = read_image(MR_SERIES)
    assert pixel_size(series)["per_pixel"] == pytest.approx(np.prod(series.spacing))
    assert pixel_size(read_image(CT)) == pytest.approx(
        {"measure": "area", "units": "mm^2", "per_pixel": read_image(CT).spacing[0] ** 2})
    seg = gmmseg.segment(img, 3, random_state=0)
    stats = seg.stats()
    assert [s["volume"] for s in stats] == [s["pixels"] * 8.0 for s in stats]
    assert [s["millilitres"] for s in stats] == pytest.approx([s["pixels"] * 0.008 for s in stats])
    report = seg.report()
    assert report["input"]["pixel_size"]["units"] == "mm^3"
    assert report["segments"][1]["millilitres"] == pytest.approx(stats[1]["millilitres"])
    # Photos have no physical size.
    photo = Image(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool), meta={"format": "png"})
    assert pixel_size(photo) is None


def test_nifti_labels_come_with_itksnap_and_fsleyes_label_files(tmp_path):
    seg = gmmseg.segment(read_image(ANATOMICAL), 3, random_state=0)
    paths = seg.save(tmp_path)
    assert paths["labels_itksnap"].name == "anatomical_labels.txt"
    assert paths["labels_lut"].name == "anatomical_labels.lut"
    colours = gmmseg.postprocess.segment_colors(3)
    names = ["segment 0 (darkest)", "segment 1", "segment 2 (brightest)"]
    # ITK-SNAP: IDX -R- -G- -B- -A-- VIS MSH "LABEL", comments start with '#'.
    rows = [line for line in paths["labels_itksnap"].read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert len(rows) == 3
    for k, line in enumerate(rows):
        match = re.fullmatch(
            r'\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([01])\s+([01])\s+"(.*)"', line)
        assert match, line
        assert [int(v) for v in match.groups()[:4]] == [k, *colours[k]]
        assert float(match[5]) == 1.0 and match[6] == "1" and match[8] == names[k]
    # FSLeyes: "value R G B name", colours 0..1, ascending values, no comments.
    for k, line in enumerate(paths["labels_lut"].read_text().splitlines()):
        value, r, g, b, *name = line.split()
        assert int(value) == k and " ".join(name) == names[k]
        np.testing.assert_allclose([float(r), float(g), float(b)], colours[k] / 255, atol=1e-5)
    # The label map itself is as before: values 0..K-1 in the input's geometry.
    labels = np.asarray(nib.load(paths["labels"]).dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(labels, seg.labels)
    # Invalid voxels are stored as 0 in NIfTI label maps: label 0's name says so.
    volume = read_image(ANATOMICAL)
    volume.valid[:2] = False
    names = gmmseg.pipeline.figures.segment_names(gmmseg.segment(volume, 2, random_state=0),
                                                  invalid_as_zero=True)
    assert names == ["segment 0 (darkest; and invalid pixels)", "segment 1 (brightest)"]


def _nifti_phantom(path, affine, shape, inside):
    """Save a volume: 1 where ``inside(x, y, z)`` (world mm, RAS) holds, else 0, plus noise."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    world = affine[:3, :3] @ np.stack([i.ravel(), j.ravel(), k.ravel()]) + affine[:3, 3:]
    mask = inside(*world).reshape(shape)
    rng = np.random.default_rng(0)
    data = (mask * 1.0 + rng.normal(0, 0.05, shape)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), path)


@pytest.mark.parametrize("columns", [
    np.eye(3),                                    # RAS
    np.diag([-1.0, 1, 1]),                        # LAS (as tests/data/anatomical.nii)
    np.diag([-1.0, -1, 1]),                       # LPS
    np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]]),  # sagittal slices: i -> A, j -> S, k -> R
])
def test_volume_montage_shows_axial_slices_with_anterior_up_and_right_on_the_left(tmp_path,
                                                                                 columns):
    shape = (20, 24, 16)
    affine = np.eye(4)
    affine[:3, :3] = columns * 2.0
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape) - 1) / 2  # centred on the origin
    path = tmp_path / "marker.nii.gz"
    # A marker in the patient's right anterior quarter, through the whole height.
    _nifti_phantom(path, affine, shape, lambda x, y, z: (x > 4) & (y > 4))
    seg = gmmseg.segment(read_image(path), 2, random_state=0)
    picture = seg.montage(alpha=1.0, boundaries=False, legend=False, planes=0, n_slices=1)
    marker = np.argwhere((picture == gmmseg.postprocess.segment_colors(2)[1]).all(-1))
    body = np.argwhere((picture == gmmseg.postprocess.segment_colors(2)[0]).all(-1))
    top, left = body.min(0)
    bottom, right = body.max(0)
    rows, cols = marker.mean(0)
    assert rows < (top + bottom) / 2 and cols < (left + right) / 2  # anterior up, right on left


def test_volume_montage_draws_anisotropic_voxels_at_their_physical_size(tmp_path):
    shape = (40, 40, 14)  # 1 x 1 x 3 mm voxels: 40 x 40 x 42 mm
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape) - 1) / 2
    path = tmp_path / "ball.nii.gz"
    _nifti_phantom(path, affine, shape, lambda x, y, z: x**2 + y**2 + z**2 < 14**2)
    seg = gmmseg.segment(read_image(path), 2, random_state=0)
    assert seg.image.spacing == (3.0, 1.0, 1.0)
    for plane in (1, 2):  # coronal and sagittal: slices (3 mm) against rows or columns (1 mm)
        picture = seg.montage(alpha=1.0, boundaries=False, legend=False, planes=plane,
                              n_slices=1)
        ball = np.argwhere((picture == gmmseg.postprocess.segment_colors(2)[1]).all(-1))
        height, width = ball.max(0) - ball.min(0) + 1
        assert height == pytest.approx(width, rel=0.12)  # round, not squashed 3:1
    # The volume's overlay file is that montage, with a legend, far larger than a slice.
    paths = seg.save(tmp_path / "out")
    overlay = np.asarray(PILImage.open(paths["overlay"]))
    np.testing.assert_array_equal(overlay, seg.montage(0.5))
    assert overlay.shape[0] > 3 * 40 and overlay.shape[1] > 6 * 40
    assert seg.overlay().shape == (40, 40, 3)  # the API's overlay is still one slice
