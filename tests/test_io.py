"""Tests for gmmseg.io: every reader path, the error messages, atomic writers."""

import io
import json
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

import gmmseg
from gmmseg.errors import ImageReadError, OutputExistsError
from gmmseg.io import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    Image,
    as_image,
    atomic_output,
    label_dtype,
    read_image,
    write_json,
    write_npy,
    write_png,
    write_tiff,
)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _raw_png(pixels: np.ndarray, *, colour_type: int, bit_depth: int, size=None) -> bytes:
    """A minimal PNG of (H, W) or (H, W, samples) `pixels`; `size` fakes the header's (H, W)."""
    height, width = size if size is not None else pixels.shape[:2]
    rows = pixels.reshape(pixels.shape[0], -1)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + row.astype(dtype).tobytes() for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def _assert_read_error(path, **kwargs) -> str:
    with pytest.raises(ImageReadError, match=re.escape(path.name)) as excinfo:
        read_image(path, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --------------------------------------------------------------------------
# PNG, BMP, JPEG through Pillow


def test_read_png_grey_8bit(tmp_path, rng):
    pixels = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    path = tmp_path / "grey.png"
    PILImage.fromarray(pixels).save(path)
    before = path.read_bytes()
    img = read_image(path)
    assert img.data.shape == (5, 7, 1) and img.data.dtype == np.uint8
    np.testing.assert_array_equal(img.data[..., 0], pixels)
    assert img.valid.all() and img.valid.shape == (5, 7)
    assert img.channels == ("gray",)
    assert img.meta["format"] == "png"
    assert img.path == path and img.name == "grey"
    assert path.read_bytes() == before


def test_read_png_grey_16bit_keeps_uint16(tmp_path, rng):
    pixels = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    pixels[0, 0] = 65535
    path = tmp_path / "grey16.png"
    PILImage.fromarray(pixels).save(path)
    img = read_image(path)
    assert img.data.dtype == np.uint16
    assert img.data.max() > 255
    np.testing.assert_array_equal(img.data[..., 0], pixels)


def test_read_png_rgb(tmp_path, rng):
    pixels = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    PILImage.fromarray(pixels).save(path)
    img = read_image(path)
    np.testing.assert_array_equal(img.data, pixels)
    assert img.channels == ("R", "G", "B") and img.is_rgb
    assert img.valid.all()


def test_read_png_rgba_alpha_becomes_mask(tmp_path, rng):
    pixels = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[1, 2, 3] = 0
    pixels[3, 0, 3] = 0
    pixels[2, 2, 3] = 1  # nearly transparent is still valid
    path = tmp_path / "rgba.png"
    PILImage.fromarray(pixels, mode="RGBA").save(path)
    img = read_image(path)
    assert img.data.shape == (4, 6, 3)
    np.testing.assert_array_equal(img.data, pixels[..., :3])
    np.testing.assert_array_equal(img.valid, pixels[..., 3] != 0)
    assert img.n_valid == 22


def test_read_png_palette_becomes_rgb(tmp_path, rng):
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    indices = rng.integers(0, 4, (5, 5), dtype=np.uint8)
    im = PILImage.fromarray(indices, mode="L").convert("P")
    im.putpalette(palette.ravel().tolist())
    path = tmp_path / "palette.png"
    im.save(path)
    img = read_image(path)
    assert img.channels == ("R", "G", "B")
    np.testing.assert_array_equal(img.data, palette[indices])
    assert img.valid.all()


def test_read_png_palette_transparency_becomes_mask(tmp_path, rng):
    indices = rng.integers(0, 3, (5, 5), dtype=np.uint8)
    im = PILImage.fromarray(indices, mode="L").convert("P")
    im.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * (253 * 3))
    path = tmp_path / "palette_alpha.png"
    im.save(path, transparency=1)  # palette index 1 is transparent
    img = read_image(path)
    assert img.data.shape == (5, 5, 3)
    np.testing.assert_array_equal(img.valid, indices != 1)
    np.testing.assert_array_equal(img.data[indices == 2], np.tile([70, 80, 90], ((indices == 2).sum(), 1)))


def test_read_png_grey_alpha(tmp_path, rng):
    pixels = rng.integers(0, 256, (5, 4, 2), dtype=np.uint8)
    pixels[..., 1] = 200
    pixels[0, 1, 1] = 0
    path = tmp_path / "la.png"
    PILImage.fromarray(pixels, mode="LA").save(path)
    img = read_image(path)
    assert img.data.shape == (5, 4, 1) and img.channels == ("gray",)
    np.testing.assert_array_equal(img.data[..., 0], pixels[..., 0])
    np.testing.assert_array_equal(img.valid, pixels[..., 1] != 0)


def test_read_png_grey_transparent_colour_is_invalid(tmp_path, rng):
    pixels = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    key = int(pixels[2, 3])
    path = tmp_path / "trns.png"
    PILImage.fromarray(pixels).save(path, transparency=key)
    img = read_image(path)
    np.testing.assert_array_equal(img.valid, pixels != key)
    np.testing.assert_array_equal(img.data[..., 0], pixels)


def test_read_png_16bit_rgb_and_rgba_keep_uint16(tmp_path, rng):
    rgba = rng.integers(0, 65536, (4, 5, 4), dtype=np.uint16)
    rgba[..., 3] = 65535
    rgba[2, 1, 3] = 0
    rgb_path = tmp_path / "rgb16.png"
    rgb_path.write_bytes(_raw_png(rgba[..., :3], colour_type=2, bit_depth=16))
    rgba_path = tmp_path / "rgba16.png"
    rgba_path.write_bytes(_raw_png(rgba, colour_type=6, bit_depth=16))

    img = read_image(rgb_path)
    assert img.data.dtype == np.uint16 and img.channels == ("R", "G", "B")
    np.testing.assert_array_equal(img.data, rgba[..., :3])
    assert img.valid.all()

    img = read_image(rgba_path)
    np.testing.assert_array_equal(img.data, rgba[..., :3])
    np.testing.assert_array_equal(img.valid, rgba[..., 3] != 0)


def test_read_png_16bit_grey_alpha(tmp_path, rng):
    la = rng.integers(0, 65536, (3, 4, 2), dtype=np.uint16)
    la[..., 1] = 1000
    la[0, 0, 1] = 0
    path = tmp_path / "la16.png"
    path.write_bytes(_raw_png(la, colour_type=4, bit_depth=16))
    img = read_image(path)
    assert img.data.shape == (3, 4, 1) and img.data.dtype == np.uint16
    np.testing.assert_array_equal(img.data[..., 0], la[..., 0])
    np.testing.assert_array_equal(img.valid, la[..., 1] != 0)


def test_read_bmp(tmp_path, rng):
    pixels = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    path = tmp_path / "photo.bmp"
    PILImage.fromarray(pixels).save(path)
    img = read_image(path)
    np.testing.assert_array_equal(img.data, pixels)
    assert img.meta["format"] == "bmp"


def test_read_jpeg_shape_and_values(tmp_path):
    yy, xx = np.mgrid[0:24, 0:32]
    pixels = np.stack([yy * 8, xx * 6, np.full_like(xx, 120)], axis=-1).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    PILImage.fromarray(pixels).save(path, quality=95)
    img = read_image(path)
    assert img.data.shape == (24, 32, 3) and img.data.dtype == np.uint8
    assert img.meta["format"] == "jpeg"
    assert np.abs(img.data.astype(int) - pixels).mean() < 3


def test_read_jpeg_applies_exif_orientation(tmp_path):
    pixels = np.zeros((32, 48), dtype=np.uint8)
    pixels[:8, :8] = 255  # marked top-left corner of the stored image
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    PILImage.fromarray(pixels).save(path, exif=exif, quality=95)
    img = read_image(path)
    assert img.data.shape == (48, 32, 1)
    # Clockwise rotation moves the stored top-left corner to the top right.
    assert img.data[:8, 24:, 0].mean() > 200
    assert img.data[:8, :8, 0].mean() < 50
    assert img.data[40:, 24:, 0].mean() < 50


# --------------------------------------------------------------------------
# TIFF


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_read_tiff_grey(tmp_path, rng, dtype):
    pixels = rng.integers(0, np.iinfo(dtype).max, (6, 7), dtype=dtype, endpoint=True)
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, pixels, photometric="minisblack")
    img = read_image(path)
    assert img.data.dtype == dtype and img.channels == ("gray",)
    np.testing.assert_array_equal(img.data[..., 0], pixels)
    assert img.meta["format"] == "tiff"


def test_read_tiff_16bit_rgb(tmp_path, rng):
    pixels = rng.integers(0, 65536, (5, 4, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.tiff"
    tifffile.imwrite(path, pixels, photometric="rgb")
    img = read_image(path)
    assert img.data.dtype == np.uint16 and img.channels == ("R", "G", "B")
    np.testing.assert_array_equal(img.data, pixels)


def test_read_tiff_float_multichannel_nan_is_invalid(tmp_path, rng):
    pixels = rng.normal(size=(5, 6, 3)).astype(np.float32)
    pixels[1, 1, 2] = np.nan
    pixels[4, 0, :] = np.nan
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, pixels, photometric="minisblack", planarconfig="contig")
    img = read_image(path)
    assert img.data.dtype == np.float32
    assert img.channels == ("band1", "band2", "band3") and not img.is_rgb
    np.testing.assert_array_equal(img.data, pixels)
    expected = np.ones((5, 6), dtype=bool)
    expected[1, 1] = expected[4, 0] = False
    np.testing.assert_array_equal(img.valid, expected)


@pytest.mark.parametrize("planar", [False, True])
def test_read_tiff_five_bands(tmp_path, rng, planar):
    pixels = rng.integers(0, 65536, (6, 4, 5), dtype=np.uint16)
    path = tmp_path / "bands.tif"
    if planar:
        tifffile.imwrite(path, np.moveaxis(pixels, -1, 0), photometric="minisblack", planarconfig="separate")
    else:
        tifffile.imwrite(path, pixels, photometric="minisblack", planarconfig="contig")
    img = read_image(path)
    assert img.channels == ("band1", "band2", "band3", "band4", "band5")
    np.testing.assert_array_equal(img.data, pixels)


def test_read_tiff_rgba_alpha_becomes_mask(tmp_path, rng):
    pixels = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[0, 3, 3] = 0
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", extrasamples=["unassalpha"])
    img = read_image(path)
    np.testing.assert_array_equal(img.data, pixels[..., :3])
    np.testing.assert_array_equal(img.valid, pixels[..., 3] != 0)


def test_read_multipage_tiff_is_volume(tmp_path, rng):
    stack = rng.integers(0, 65536, (3, 4, 5), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    img = read_image(path)
    assert img.is_volume and img.ndim == 3
    assert img.data.shape == (3, 4, 5, 1)
    np.testing.assert_array_equal(img.data[..., 0], stack)


_PIL_TRANSPOSE = {
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_270,
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_tiff_orientation_tag_matches_pillow(tmp_path, rng, orientation):
    pixels = rng.integers(0, 256, (3, 5), dtype=np.uint8)
    path = tmp_path / "oriented.tif"
    tifffile.imwrite(path, pixels, photometric="minisblack", extratags=[(274, "H", 1, orientation, True)])
    im = PILImage.fromarray(pixels)
    expected = np.asarray(im.transpose(_PIL_TRANSPOSE[orientation]) if orientation > 1 else im)
    np.testing.assert_array_equal(read_image(path).data[..., 0], expected)


def test_read_lzw_tiff_through_pillow(tmp_path, rng):
    # tifffile needs the optional imagecodecs package for LZW; Pillow decodes it.
    pixels = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    path = tmp_path / "lzw.tif"
    PILImage.fromarray(pixels).save(path, compression="tiff_lzw")
    img = read_image(path)
    np.testing.assert_array_equal(img.data[..., 0], pixels)
    assert img.meta["format"] == "tiff"


def test_read_palette_tiff(tmp_path, rng):
    indices = rng.integers(0, 3, (4, 4), dtype=np.uint8)
    im = PILImage.fromarray(indices, mode="L").convert("P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    path = tmp_path / "palette.tif"
    im.save(path)
    img = read_image(path)
    np.testing.assert_array_equal(img.data, np.eye(3, dtype=np.uint8)[indices] * 255)


# --------------------------------------------------------------------------
# .npy


def test_read_npy_2d_and_3d(tmp_path, rng):
    grey = rng.integers(0, 1000, (4, 5), dtype=np.int16)
    np.save(tmp_path / "grey.npy", grey)
    img = read_image(tmp_path / "grey.npy")
    assert img.data.shape == (4, 5, 1) and img.data.dtype == np.int16
    np.testing.assert_array_equal(img.data[..., 0], grey)
    assert img.meta["format"] == "npy" and img.channels == ("gray",)

    bands = rng.normal(size=(4, 5, 4)).astype(np.float32)
    bands[2, 3, 1] = np.nan
    np.save(tmp_path / "bands.npy", bands)
    img = read_image(tmp_path / "bands.npy")
    np.testing.assert_array_equal(img.data, bands)
    assert img.channels == ("band1", "band2", "band3", "band4")
    assert img.n_valid == 19 and not img.valid[2, 3]


# --------------------------------------------------------------------------
# as_image and Image


def test_as_image_grey_array_is_a_view():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    img = as_image(pixels)
    assert img.data.shape == (3, 4, 1) and img.channels == ("gray",)
    assert np.shares_memory(img.data, pixels)
    assert img.valid.all() and img.path is None and img.name == "image"


def test_as_image_nan_and_valid_mask_do_not_modify_input():
    pixels = np.ones((3, 4, 2), dtype=np.float32)
    pixels[0, 0, 1] = np.nan
    pixels[2, 3, 0] = np.inf
    before = pixels.copy()
    mask = np.ones((3, 4), dtype=bool)
    mask[1, 1] = False
    img = as_image(pixels, valid=mask)
    expected = np.ones((3, 4), dtype=bool)
    expected[0, 0] = expected[2, 3] = expected[1, 1] = False
    np.testing.assert_array_equal(img.valid, expected)
    np.testing.assert_array_equal(pixels, before)
    assert mask.sum() == 11
    assert np.shares_memory(img.data, pixels)


def test_as_image_passes_images_and_reads_paths(tmp_path):
    img = as_image(np.zeros((2, 2, 3), np.uint8))
    assert as_image(img) is img
    assert img.is_rgb
    mask = np.array([[True, False], [True, True]])
    masked = as_image(img, valid=mask)
    np.testing.assert_array_equal(masked.valid, mask)
    assert img.valid.all()  # the original keeps its mask

    path = tmp_path / "a.npy"
    np.save(path, np.ones((2, 3), np.uint8))
    assert as_image(str(path)).data.shape == (2, 3, 1)
    assert as_image(path).path == path


def test_as_image_rejects_bad_input():
    with pytest.raises(TypeError, match="image must be"):
        as_image([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        as_image(np.zeros(5))
    with pytest.raises(TypeError, match="dtype"):
        as_image(np.zeros((2, 2), complex))
    with pytest.raises(ValueError, match="at least one pixel"):
        as_image(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="valid must have"):
        as_image(np.zeros((2, 2)), valid=np.ones((2, 3), bool))
    with pytest.raises(TypeError, match="valid must be a bool"):
        as_image(np.zeros((2, 2)), valid=np.ones((2, 2), int))


def test_image_properties_and_validation():
    vol = Image(np.zeros((2, 3, 4, 1), np.int16), np.ones((2, 3, 4), bool), path="scan.nii.gz",
                spacing=(2, 0.5, 0.5))
    assert vol.is_volume and vol.ndim == 3 and vol.spatial_shape == (2, 3, 4)
    assert vol.n_channels == 1 and not vol.is_rgb
    assert vol.name == "scan" and vol.spacing == (2.0, 0.5, 0.5)
    assert "scan.nii.gz" in repr(vol)
    assert Image(np.zeros((2, 2, 3), np.uint16), np.ones((2, 2), bool)).is_rgb
    assert not Image(np.zeros((2, 2, 3), np.float32), np.ones((2, 2), bool)).is_rgb
    with pytest.raises(ValueError, match="valid must have shape"):
        Image(np.zeros((2, 2, 1)), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="spacing"):
        Image(np.zeros((2, 2, 1)), np.ones((2, 2), bool), spacing=(1.0,))
    with pytest.raises(ValueError, match="channels"):
        Image(np.zeros((2, 2, 1)), np.ones((2, 2), bool), channels=("R", "G"))


# --------------------------------------------------------------------------
# Reader errors


def test_error_missing_file(tmp_path):
    assert "not found" in _assert_read_error(tmp_path / "missing.png")


def test_error_directory(tmp_path):
    # A directory is read as a DICOM series; an empty one says so.
    folder = tmp_path / "folder.png"
    folder.mkdir()
    message = _assert_read_error(folder)
    assert "read as one DICOM series, and this one holds no file" in message
    assert "find_inputs and run_batch" in message


def test_error_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    assert "empty" in _assert_read_error(path)


def test_error_text_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    assert "not a supported image" in _assert_read_error(path)


@pytest.mark.parametrize(
    ("name", "content", "format_name"),
    [
        ("anim.gif", b"GIF89a" + b"\x00" * 64, "GIF"),
        ("image.webp", b"RIFF\x00\x00\x00\x00WEBP" + b"\x00" * 64, "WebP"),
        ("arrays.npz", b"PK\x03\x04" + b"\x00" * 64, "zip"),
    ],
)
def test_error_unsupported_format(tmp_path, name, content, format_name):
    path = tmp_path / name
    path.write_bytes(content)
    assert f"unsupported format {format_name}" in _assert_read_error(path)


@pytest.mark.parametrize(
    ("name", "content", "reader"),
    [
        ("slice.dcm", b"\x00" * 128 + b"DICM" + b"\x00" * 64, "DICOM"),
        ("noext", b"\x00" * 128 + b"DICM" + b"\x00" * 64, "DICOM"),
        ("brain.nii.gz", b"\x1f\x8b\x08" + b"\x00" * 64, "NIfTI"),
        ("brain.nii", b"\x5c\x01\x00\x00" + b"\x00" * 400, "NIfTI"),
    ],
)
def test_medical_files_are_recognised_by_content(tmp_path, name, content, reader):
    # Broken files of each kind reach their reader, which names the format in its error.
    path = tmp_path / name
    path.write_bytes(content)
    assert reader in _assert_read_error(path)


def test_gzip_that_is_not_nifti_is_unsupported(tmp_path):
    path = tmp_path / "archive.gz"
    path.write_bytes(b"\x1f\x8b\x08" + b"\x00" * 64)
    assert "unsupported format gzip" in _assert_read_error(path)


@pytest.mark.parametrize("name", ["cut.png", "cut.jpg", "cut.tif", "cut16.png", "cut.npy"])
def test_error_truncated_file(tmp_path, rng, name):
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / name
    if name == "cut16.png":
        path.write_bytes(_raw_png(pixels.astype(np.uint16) * 200, colour_type=2, bit_depth=16))
    elif name.endswith(".tif"):
        tifffile.imwrite(path, pixels, photometric="rgb")
    elif name.endswith(".npy"):
        np.save(path, pixels)
    else:
        PILImage.fromarray(pixels).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _assert_read_error(path)


def test_error_more_pixels_than_max_pixels(tmp_path, rng):
    path = tmp_path / "small.png"
    PILImage.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(path)
    assert "max_pixels=99" in _assert_read_error(path, max_pixels=99)
    assert read_image(path, max_pixels=100).data.shape == (10, 10, 1)

    tif = tmp_path / "small.tif"
    tifffile.imwrite(tif, np.zeros((10, 10), np.uint8), photometric="minisblack")
    assert "decompression bomb" in _assert_read_error(tif, max_pixels=99)


def test_error_decompression_bomb_from_header_only(tmp_path):
    # The header claims 100000 x 100000 pixels; decoding would need 10 GB.
    path = tmp_path / "bomb.png"
    fake = _raw_png(np.zeros((1, 1), np.uint8), colour_type=0, bit_depth=8, size=(100_000, 100_000))
    path.write_bytes(fake)
    message = _assert_read_error(path)
    assert "10000000000 pixels" in message and f"max_pixels={DEFAULT_MAX_PIXELS}" in message

    npy = tmp_path / "bomb.npy"
    with open(npy, "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (100_000, 100_000)}
        np.lib.format.write_array_header_1_0(f, header)
    assert "decompression bomb" in _assert_read_error(npy)


def test_our_pixel_limit_replaces_pillows(tmp_path, rng, monkeypatch):
    # Pillow alone would refuse 100 pixels under a limit of 10; our limit decides.
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10)
    path = tmp_path / "ten_by_ten.png"
    PILImage.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(path)
    assert read_image(path).data.shape == (10, 10, 1)
    assert PILImage.MAX_IMAGE_PIXELS == 10


def test_error_zero_pixel_npy(tmp_path):
    path = tmp_path / "nothing.npy"
    np.save(path, np.zeros((0, 4), np.float32))
    assert "no pixels" in _assert_read_error(path)


def test_error_object_npy(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
    assert "object" in _assert_read_error(path)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 1)])
def test_error_npy_wrong_ndim(tmp_path, shape):
    path = tmp_path / "wrong_ndim.npy"
    np.save(path, np.zeros(shape, np.uint8))
    assert "2-D (H, W) or 3-D (H, W, C)" in _assert_read_error(path)


def test_error_complex_npy(tmp_path):
    path = tmp_path / "complex.npy"
    np.save(path, np.zeros((2, 2), complex))
    assert "complex128" in _assert_read_error(path)


# --------------------------------------------------------------------------
# Writers


def test_atomic_output_refuses_existing_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(OutputExistsError, match=re.escape(str(path))):
        with atomic_output(path) as tmp:
            tmp.write_text("new")
    assert path.read_text() == "old"
    with atomic_output(path, overwrite=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.tmp-")
        tmp.write_text("new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_output_cleans_up_after_an_exception(tmp_path):
    path = tmp_path / "out.png"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(path) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_file_created_meanwhile(tmp_path):
    path = tmp_path / "race.txt"
    with pytest.raises(OutputExistsError, match="race.txt"):
        with atomic_output(path) as tmp:
            tmp.write_text("mine")
            path.write_text("theirs")
    assert path.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["race.txt"]


def test_atomic_output_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_output(tmp_path / "nope" / "out.txt"):
            pass


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (np.uint8, (5, 6)),
        (np.uint16, (5, 6)),
        (np.uint8, (5, 6, 3)),
        (np.uint16, (5, 6, 3)),
        (np.uint8, (5, 6, 4)),
    ],
)
def test_write_png_round_trip(tmp_path, rng, dtype, shape):
    pixels = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    if len(shape) == 3 and shape[2] == 4:
        pixels[..., 3] = 255
    path = tmp_path / "labels.png"
    write_png(path, pixels)
    img = read_image(path)
    assert img.data.dtype == dtype
    expected = pixels[..., :3] if pixels.ndim == 3 else pixels[..., np.newaxis]
    np.testing.assert_array_equal(img.data, expected)
    with pytest.raises(OutputExistsError, match="labels.png"):
        write_png(path, pixels)
    write_png(path, np.zeros_like(pixels), overwrite=True)
    assert read_image(path).data.max() == 0


@pytest.mark.parametrize("deflate", ["installed", "zlib"])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [(np.uint8, (700, 530)), (np.uint16, (300, 257)), (np.uint8, (300, 401, 2)),
     (np.uint8, (613, 900, 3)), (np.uint16, (130, 70, 4)), (np.uint8, (1, 1)),
     (np.uint8, (3, 1, 3))],
)
def test_png_encoder_matches_opencv_and_pillow(monkeypatch, dtype, shape, deflate):
    """Every stripe, IDAT chunk and 16-bit sample decodes as written, by two
    decoders (Pillow checks each chunk's CRC), with either deflate."""
    import cv2

    from gmmseg.io import _png

    if deflate == "zlib":
        monkeypatch.setattr(_png, "_deflate", zlib)
        monkeypatch.setattr(_png, "_LEVEL", 1)
        monkeypatch.setattr(_png, "_STRATEGY", zlib.Z_RLE)
    monkeypatch.setattr(_png, "_STRIPE_BYTES", 4096)     # many stripes
    monkeypatch.setattr(_png, "_CHUNK_BYTES", 1024)      # many IDAT chunks
    rng = np.random.default_rng(sum(shape))
    # Smooth ramps with noise: long runs for deflate, and every byte value.
    ramp = np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * 37
    pixels = (ramp.reshape(shape[:2] + (1,) * (len(shape) - 2))
              + rng.integers(0, 9, shape)).astype(dtype)
    pixels = pixels[..., ::-1] if pixels.ndim == 3 else pixels.T.copy().T   # not C-contiguous
    before = pixels.copy()
    parts = []
    _png.encode_png(pixels, parts.append)
    data = b"".join(parts)
    np.testing.assert_array_equal(pixels, before)
    assert data.count(b"IDAT") >= (2 if pixels.nbytes > 1_000_000 else 1)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels.ndim == 3:        # OpenCV gives BGR(A), grey + alpha too
        decoded = decoded[..., {2: [0, 3], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[pixels.shape[2]]]
    np.testing.assert_array_equal(decoded.reshape(pixels.shape), pixels)
    with PILImage.open(io.BytesIO(data)) as picture:
        picture.load()
        if dtype == np.uint8:
            np.testing.assert_array_equal(np.asarray(picture).reshape(pixels.shape), pixels)


def test_png_encoder_size_near_opencv():
    """The Sub filter and deflate give files no more than a fifth larger than
    OpenCV's defaults on a photo (ISA-L's fast level; zlib gives OpenCV's)."""
    import cv2

    from gmmseg.io import _png

    photo = gmmseg.io.read_image(Path(__file__).parents[1] / "sample_images" / "astronaut.png").data
    parts = []
    _png.encode_png(photo, parts.append)
    ours = sum(map(len, parts))
    theirs = len(cv2.imencode(".png", photo)[1])
    assert ours <= 1.2 * theirs


def test_write_png_rejects_bad_arrays(tmp_path):
    with pytest.raises(TypeError, match="uint8 or uint16"):
        write_png(tmp_path / "a.png", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        write_png(tmp_path / "a.png", np.zeros((2, 2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_write_npy_round_trip(tmp_path, rng):
    array = rng.normal(size=(3, 4, 2)).astype(np.float32)
    path = tmp_path / "proba.npy"
    write_npy(path, array)
    np.testing.assert_array_equal(np.load(path), array)
    assert [p.name for p in tmp_path.iterdir()] == ["proba.npy"]
    with pytest.raises(OutputExistsError):
        write_npy(path, array)
    with pytest.raises(TypeError, match="object"):
        write_npy(tmp_path / "objects.npy", np.array([None]))


def test_write_json_converts_numpy(tmp_path):
    path = tmp_path / "report.json"
    report = {"k": np.int64(3), "weights": np.array([0.5, 0.25, 0.25], np.float32),
              "converged": np.bool_(True), "path": tmp_path}
    write_json(path, report)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and '\n  "k": 3' in text
    expected = {"k": 3, "weights": [0.5, 0.25, 0.25], "converged": True, "path": str(tmp_path)}
    assert json.loads(text) == expected
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3), (2, 4, 5, 2)])
def test_write_tiff_round_trip(tmp_path, rng, shape):
    array = rng.normal(size=shape).astype(np.float32)
    path = tmp_path / "proba.tif"
    write_tiff(path, array)
    expected = array[..., np.newaxis] if len(shape) == 2 else array
    np.testing.assert_array_equal(read_image(path).data, expected)
    with pytest.raises(OutputExistsError):
        write_tiff(path, array)


def test_label_dtype():
    assert label_dtype(1) is np.uint8
    assert label_dtype(255) is np.uint8
    assert label_dtype(256) is np.uint16
    assert label_dtype(65535) is np.uint16
    with pytest.raises(ValueError, match="n_components"):
        label_dtype(0)
    with pytest.raises(ValueError, match="n_components"):
        label_dtype(65536)
    with pytest.raises(TypeError, match="n_components"):
        label_dtype(4.0)


def test_supported_suffixes():
    assert all(s.startswith(".") and s == s.lower() for s in SUPPORTED_SUFFIXES)
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy"} <= set(SUPPORTED_SUFFIXES)
    assert {".dcm", ".nii", ".nii.gz"} <= set(SUPPORTED_SUFFIXES)


# --------------------------------------------------------------------------
# Options that apply to every format: bands, nodata


def test_bands_choose_channels_of_any_image(tmp_path, rng):
    pixels = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    PILImage.fromarray(pixels).save(path)
    img = read_image(path, bands=(3, 2, 1))
    np.testing.assert_array_equal(img.data, pixels[..., ::-1])
    assert img.channels == ("B", "G", "R") and not img.is_rgb
    assert read_image(path, bands="2").channels == ("G",)
    assert read_image(path, bands=[1, 2, 3]).is_rgb
    assert "band 4 does not exist" in _assert_read_error(path, bands=(4,))


def test_nodata_marks_pixels_whose_every_channel_equals_it(tmp_path):
    pixels = np.full((3, 4, 3), 7, np.uint8)
    pixels[0, 0] = 0
    pixels[1, 1] = [0, 0, 5]  # one channel holds data: valid
    path = tmp_path / "frame.png"
    PILImage.fromarray(pixels).save(path)
    img = read_image(path, nodata=0)
    expected = np.ones((3, 4), bool)
    expected[0, 0] = False
    np.testing.assert_array_equal(img.valid, expected)
    assert img.meta["nodata"] == 0
    pixels[:] = 9
    PILImage.fromarray(pixels).save(path)
    assert "no valid pixels" in _assert_read_error(path, nodata=9)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bands": ()}, ValueError, "at least one band"),
        ({"bands": (0,)}, ValueError, "numbered from 1"),
        ({"bands": (1.5,)}, TypeError, "integers"),
        ({"bands": "a,b"}, ValueError, "comma-separated"),
        ({"nodata": "0"}, TypeError, "nodata must be a number"),
        ({"nodata": float("inf")}, ValueError, "finite or NaN"),
        ({"volume": -1}, ValueError, "volume must be >= 0"),
        ({"volume": 1.0}, TypeError, "volume must be an integer"),
        ({"series": 12}, TypeError, "SeriesInstanceUID"),
    ],
)
def test_bad_option_values(tmp_path, kwargs, error, match):
    path = tmp_path / "tiny.npy"
    np.save(path, np.zeros((2, 2), np.uint8))
    with pytest.raises(error, match=match):
        read_image(path, **kwargs)


# --- NumPy arrays as scikit-image users pass them ----------------------------------


def test_float_rgb_in_unit_range_is_a_photo_and_gets_lab():
    rng = np.random.default_rng(0)
    photo = rng.uniform(0, 1, (12, 10, 3))
    assert as_image(photo).is_rgb and as_image(photo).is_photo
    assert not as_image(photo * 255.0).is_rgb  # floats beyond [0, 1]: anonymous bands
    seg = gmmseg.segment(photo, 2, features="lab")
    assert list(seg.features.names_) == ["L", "a", "b"]
    # The same photo in 8-bit gives the same segments, up to rounding.
    as_uint8 = gmmseg.segment(np.round(photo * 255).astype(np.uint8), 2, features="lab")
    assert np.mean(seg.labels == as_uint8.labels) > 0.95


def test_channel_axis_none_makes_a_volume_and_spacing_is_kept():
    volume = np.zeros((6, 8, 9), np.float32)
    volume[3:] = 1.0
    img = as_image(volume, channel_axis=None, spacing=(3.0, 0.5, 0.5))
    assert img.data.shape == (6, 8, 9, 1) and img.is_volume and img.spacing == (3.0, 0.5, 0.5)
    seg = gmmseg.segment(volume, 2, channel_axis=None, spacing=(3.0, 0.5, 0.5))
    assert seg.labels.shape == (6, 8, 9) and seg.image.spacing == (3.0, 0.5, 0.5)
    assert set(np.unique(seg.labels[:3])) == {0} and set(np.unique(seg.labels[3:])) == {1}
    # Channels first, as some libraries store them: moved last, as a view.
    first = np.zeros((3, 5, 7), np.uint8)
    moved = as_image(first, channel_axis=0)
    assert moved.data.shape == (5, 7, 3) and np.shares_memory(moved.data, first)
    with pytest.raises(ValueError, match="channel_axis must be None or an axis"):
        as_image(first, channel_axis=3)
    with pytest.raises(ValueError, match="spacing must hold 3 positive"):
        as_image(volume, channel_axis=None, spacing=(1.0, 1.0))


def test_many_channels_warn_that_the_array_may_be_a_volume():
    stack = np.zeros((10, 10, 40), np.float32)
    with pytest.warns(UserWarning, match="channel_axis=None"):
        img = as_image(stack)
    assert img.n_channels == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_image(stack, channel_axis=2).n_channels == 40   # said so: no warning
        assert as_image(stack, channel_axis=None).is_volume
        assert as_image(np.zeros((10, 10, 16), np.float32)).n_channels == 16
