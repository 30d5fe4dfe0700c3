"""Reading and writing image files.

This package owns every file format gmmseg reads or writes and the `Image`
container the rest of the package works on. It knows nothing about mixtures.

Readers turn a file into an `Image`: channel-last pixels in the dtype stored in
the file, plus a validity mask (alpha == 0, NaN, infinite and nodata pixels
are invalid) and the metadata needed to write results back in the input's
geometry. Every unreadable input raises `ImageReadError` with a one-line
message that names the file.

Modules:

- `image`: the `Image` container and shared helpers;
- `photo`: PNG, JPEG, BMP, TIFF and ``.npy`` readers (Pillow, tifffile, OpenCV);
- `medical`: DICOM files and series, NIfTI volumes (pydicom, nibabel; the
  ``medical`` extra) and the volume axis convention;
- `geo`: GeoTIFF and other GDAL rasters (rasterio; the ``geo`` extra);
- `read`: `read_image`, which picks the reader from the content, and `as_image`;
- `writers`: atomic PNG, TIFF, ``.npy`` and JSON writers;
- `masks`: ``mask=`` as an array, a file on the image's grid or ``"nonzero"``;
- `model_file`: saved models (``.npz`` or JSON, checksummed, never pickled);
- `results`: result maps in the input's geometry (`result_suffix`,
  `write_result_map`), the files that name and colour their labels
  (`write_label_table`), the physical size of a pixel (`pixel_size`) and
  `describe`.

Writers are atomic: they write a hidden temporary file next to the target and
rename it into place, so an interrupted run never leaves a partial output, and
they refuse to replace an existing file unless ``overwrite=True``.
"""

from .image import DEFAULT_MAX_PIXELS, Image, file_stem, real_path
from .masks import MASK_RULES, resolve_mask
from .read import SUPPORTED_SUFFIXES, as_image, parse_bands, read_image
from .results import (
    describe,
    label_table_suffixes,
    pixel_size,
    result_suffix,
    write_label_table,
    write_result_map,
)
from .writers import (
    MAX_LABELS,
    atomic_output,
    label_dtype,
    remove_stale_temporaries,
    write_json,
    write_npy,
    write_png,
    write_tiff,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MASK_RULES",
    "MAX_LABELS",
    "SUPPORTED_SUFFIXES",
    "Image",
    "as_image",
    "atomic_output",
    "describe",
    "file_stem",
    "label_dtype",
    "label_table_suffixes",
    "parse_bands",
    "pixel_size",
    "read_image",
    "real_path",
    "remove_stale_temporaries",
    "resolve_mask",
    "result_suffix",
    "write_json",
    "write_label_table",
    "write_npy",
    "write_png",
    "write_result_map",
    "write_tiff",
]
