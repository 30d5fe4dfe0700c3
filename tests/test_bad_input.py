"""Bad input through every command: one ``error:`` line per file, nothing else.

A corpus of broken files is built in a temporary folder (truncated PNG,
JPEG and TIFF, a TIFF whose first IFD offset points nowhere, an empty file,
a text file named .png, a DICOM with corrupt JPEG 2000 pixel data made from
``tests/data/ct_small.dcm``, a NIfTI with a broken header, ``.npy`` files of
Python objects, a symbolic-link loop, a dangling link, a file without read
permission where permissions apply, a folder without images) beside two
good images.  ``segment``, ``info``, ``select-k``, ``batch`` and ``apply``
run over it through click's ``CliRunner`` and once as real processes
(logging goes to the real stderr there, and batch workers are processes of
their own).  Each run must exit 1 (2 for usage), print exactly one line
starting with ``error:`` per bad file and no traceback or other library's
log line, write no output for a bad file, leave every input as it was, and
still process the good files.

Also here: the other messages of the "bad input and messages" issue --
logging of other libraries, one ``error:`` style, hints in flags, plurals,
large K, model files that are not models, distinct output names.
"""

import ast
import importlib.util
import hashlib
import logging
import os
import pickle
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import click
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image as PILImage

import gmmseg
from gmmseg import LargeModelWarning, ModelFileError, segment
from gmmseg._log import configure_logging
from gmmseg.cli import main
from gmmseg.cli._errors import in_flags
from gmmseg.io import real_path
from gmmseg.io.model_file import read_model_file
from gmmseg.mixture import FitCost, GaussianMixture, estimate_fit_cost, n_free_parameters
from gmmseg.pipeline import fit_shared_model, save_shared_model

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
GOOD = ("good.png", "good.jpg")
# Running as root ignores file permissions: there the unreadable file cannot be made.
PERMISSIONS_APPLY = hasattr(os, "geteuid") and os.geteuid() != 0


# --------------------------------------------------------------------------
# The corpus


def _blocks(seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((40, 48, 3), np.uint8)
    img[:, :24] = (200, 40, 40)
    img[:, 24:] = (40, 60, 190)
    return np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)


def _corrupt_j2k_dicom(path):
    """ct_small.dcm with its transfer syntax set to JPEG 2000 and garbage encapsulated pixels."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(DATA / "ct_small.dcm")
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    garbage = b"\xff\x4f\xff\x51" + bytes(np.random.default_rng(1).integers(0, 256, 300,
                                                                             dtype=np.uint8))
    ds.PixelData = encapsulate([garbage])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)


def make_corpus(folder):
    """Write the corpus into ``folder``; return ``{name: problem}`` of its bad files."""
    folder.mkdir(parents=True)
    PILImage.fromarray(_blocks()).save(folder / "good.png")
    PILImage.fromarray(_blocks(1)).save(folder / "good.jpg", quality=95)
    png, jpg = (folder / "good.png").read_bytes(), (folder / "good.jpg").read_bytes()
    tifffile.imwrite(folder / "scratch.tif", _blocks(2))
    tif = (folder / "scratch.tif").read_bytes()
    (folder / "scratch.tif").unlink()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (folder / "truncated.tif").write_bytes(tif[: len(tif) // 2])
    bad_ifd = bytearray(tif)
    bad_ifd[4:8] = struct.pack("<I", 0xFFFFFF00)  # the first IFD lies far past the end
    (folder / "bad_ifd.tif").write_bytes(bytes(bad_ifd))
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image, only text\n")
    _corrupt_j2k_dicom(folder / "j2k.dcm")
    header = bytearray((DATA / "anatomical.nii").read_bytes())
    header[40:56] = b"\xff" * 16  # dim[]: garbage dimensions
    (folder / "broken.nii").write_bytes(bytes(header))
    np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (folder / "pickle.npy").write_bytes(pickle.dumps({"not": "an array"}))
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    os.symlink("nowhere.png", folder / "dangling.png")
    problems = {
        "truncated.png": "truncated or corrupt png",
        "truncated.jpg": "truncated or corrupt jpeg",
        "truncated.tif": "truncated or corrupt tiff",
        "bad_ifd.tif": "tiff file holds no image",
        "empty.png": "empty file",
        "text.png": "not a supported image file",
        "j2k.dcm": "cannot decode the compressed (jpeg 2000",
        "broken.nii": "broken nifti header",
        "objects.npy": "object array",
        "pickle.npy": "not a supported image file",
        "loop_a.png": "symbolic link loop",
        "loop_b.png": "symbolic link loop",
        "dangling.png": "broken symbolic link",
    }
    if PERMISSIONS_APPLY:
        (folder / "locked.png").write_bytes(png)
        (folder / "locked.png").chmod(0)
        problems["locked.png"] = "permission"
    return problems


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``(folder, {bad name: problem}, folder without images, snapshot of the inputs)``."""
    base = tmp_path_factory.mktemp("corpus")
    folder = base / "in"
    problems = make_corpus(folder)
    no_images = base / "no_images"
    no_images.mkdir()
    (no_images / "readme.txt").write_text("a folder given as an image\n")
    return folder, problems, no_images, snapshot(base)


def snapshot(base):
    """What must not change: every entry's kind, link target and bytes."""
    state = {}
    for path in sorted(base.rglob("*")):
        if path.is_symlink():
            state[path] = ("link", os.readlink(path))
        elif path.is_dir():
            state[path] = ("dir",)
        elif os.access(path, os.R_OK):
            state[path] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            state[path] = ("unreadable", path.stat().st_size, path.stat().st_mtime_ns)
    return state


def assert_unchanged(corpus):
    folder = corpus[0]
    assert snapshot(folder.parent) == corpus[3]


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_error_per_bad_file(stderr, problems, name=lambda n: n):
    """Exactly one ``error:`` line per bad file, naming it and its problem; nothing raw."""
    errors = error_lines(stderr)
    assert len(errors) == len(problems), stderr
    for bad, problem in problems.items():
        mine = [line for line in errors if re.search(rf"(^error: |/){re.escape(name(bad))}:", line)]
        assert len(mine) == 1, (bad, stderr)
        assert problem in mine[0].lower(), mine[0]
    for text in ("Traceback", "WARNING", "tifffile", "pydicom", "allow_pickle"):
        assert text not in stderr, stderr
    assert not re.search(r"^Error:", stderr, re.M), stderr
    assert not [line for line in stderr.splitlines()
                if line.startswith(("warning:", "info:", "debug:"))], stderr


def assert_only_good_outputs(out):
    """Outputs of the good files only (their stems good_png, good_jpg), besides the summaries."""
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    summaries = {"batch_summary.csv", "batch_summary.json", "index.html"}
    mine = [w for w in written if w not in summaries]
    assert mine and all(Path(w).name.startswith(("good_png_", "good_jpg_")) for w in mine), written
    for stem in ("good_png", "good_jpg"):
        assert f"{stem}_labels.png" in written and f"{stem}_report.json" in written
    assert not [w for w in written if ".tmp-" in w]


@pytest.fixture
def runner():
    return CliRunner()


# --------------------------------------------------------------------------
# Every command over the corpus


def test_segment_over_the_corpus(runner, corpus, tmp_path):
    folder, problems, no_images, _ = corpus
    out = tmp_path / "out"
    inputs = sorted(str(p) for p in folder.iterdir())
    result = runner.invoke(main, ["segment", *inputs, str(no_images), "-k", "2", "-o", str(out)])
    assert result.exit_code == 1, result.output
    expected = {**problems, "no_images": "holds no dicom image (among 1 file); for a folder of "
                                         "image files, use gmmseg batch"}
    assert_one_error_per_bad_file(result.stderr, expected)
    assert f"{len(expected)} of {len(expected) + 2} inputs failed" in result.stderr
    assert result.stdout.count("2 segments") == 2
    assert_only_good_outputs(out)
    assert_unchanged(corpus)


def test_info_over_the_corpus(runner, corpus):
    folder, problems, no_images, _ = corpus
    inputs = sorted(str(p) for p in folder.iterdir())
    result = runner.invoke(main, ["info", *inputs, str(no_images)])
    assert result.exit_code == 1
    assert_one_error_per_bad_file(result.stderr, {**problems, "no_images": "no dicom image"})
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [
        str(folder / "good.jpg"), str(folder / "good.png")]
    assert_unchanged(corpus)


def test_select_k_over_the_corpus(runner, corpus, tmp_path):
    folder, problems, no_images, _ = corpus
    for name, problem in {**problems, "no_images": "no dicom image"}.items():
        path = no_images if name == "no_images" else folder / name
        plot = tmp_path / f"{name}.png"
        result = runner.invoke(main, ["select-k", str(path), "--k-max", "2", "--plot", str(plot)])
        assert result.exit_code == 1, (name, result.output)
        assert_one_error_per_bad_file(result.stderr, {name: problem})
        assert result.stderr.count("\n") == 1 and result.stdout == ""
        assert not plot.exists()
    assert_unchanged(corpus)


def test_batch_over_the_corpus(runner, corpus, tmp_path):
    folder, problems, _, _ = corpus
    out = tmp_path / "out"
    result = runner.invoke(main, ["batch", str(folder), "-o", str(out), "-k", "2", "-j", "1"])
    assert result.exit_code == 1, result.output
    assert_one_error_per_bad_file(result.stderr, problems)
    assert f"{len(problems) + 2} inputs: 2 segmented, 0 already complete, {len(problems)} failed" \
        in result.stderr
    assert_only_good_outputs(out)
    assert_unchanged(corpus)
    # Resumed, the good ones are found again (under their distinct names), the bad fail again.
    again = runner.invoke(main, ["batch", str(folder), "-o", str(out), "-k", "2", "-j", "1",
                                 "--resume", "-q"])
    assert again.exit_code == 1
    assert f"2 already complete, {len(problems)} failed" in again.stderr
    assert_one_error_per_bad_file(again.stderr, problems)


def test_apply_over_the_corpus(runner, corpus, tmp_path):
    folder, problems, _, _ = corpus
    model_file = tmp_path / "model.npz"
    model, extractor = fit_shared_model([folder / "good.png"], n_components=2, per_image=500)
    save_shared_model(model_file, model, extractor)
    out = tmp_path / "out"
    inputs = sorted(str(p) for p in folder.iterdir())
    result = runner.invoke(main, ["apply", str(model_file), *inputs, "-o", str(out), "-j", "1"])
    assert result.exit_code == 1, result.output
    assert_one_error_per_bad_file(result.stderr, problems)
    assert_only_good_outputs(out)
    assert_unchanged(corpus)


def test_a_file_that_is_not_a_model_is_refused_without_unpickling_advice(runner, corpus,
                                                                          tmp_path):
    folder = corpus[0]
    notes = tmp_path / "notes.npz"
    np.savez(notes, a=np.arange(3), b=np.array([{"x": 1}], dtype=object))
    out = tmp_path / "out"
    for model_file, problem in [
            (notes, "an .npz archive of a, b, without gmmseg's format entry"),
            (folder / "good.png", "not an .npz archive"),
            (folder / "pickle.npy", "not an .npz archive"),
            (folder / "truncated.png", "not an .npz archive")]:
        result = runner.invoke(main, ["apply", str(model_file), str(folder / "good.png"),
                                      "-o", str(out)])
        assert result.exit_code == 1
        assert result.stderr == (f"error: {model_file}: not a readable gmmseg model file "
                                 f"({problem})\n")
        assert not out.exists()
    assert_unchanged(corpus)


def test_a_folder_of_images_given_to_segment_points_to_batch(runner, corpus, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in GOOD:
        (folder / name).write_bytes((corpus[0] / name).read_bytes())
    result = runner.invoke(main, ["segment", str(folder), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {folder}: a folder is read as one DICOM series, and this one holds no DICOM "
        "image (among 2 files); for a folder of image files, use gmmseg batch\n")
    assert not (tmp_path / "out").exists()


def _run(args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gmmseg.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


def test_the_corpus_in_real_processes(corpus, tmp_path):
    """Logging to the real stderr, and batch workers in processes of their own."""
    folder, problems, no_images, _ = corpus
    inputs = sorted(str(p) for p in folder.iterdir())
    seg = _run(["segment", *inputs, str(no_images), "-k", "2", "-o", str(tmp_path / "seg")])
    assert seg.returncode == 1, seg.stderr
    assert_one_error_per_bad_file(seg.stderr, {**problems, "no_images": "no dicom image"})
    assert_only_good_outputs(tmp_path / "seg")
    out = tmp_path / "batch"
    batch = _run(["batch", str(folder), "-o", str(out), "-k", "2", "-j", "2", "-q"])
    assert batch.returncode == 1, batch.stderr
    assert_one_error_per_bad_file(batch.stderr, problems)
    assert_only_good_outputs(out)
    assert_unchanged(corpus)


# --------------------------------------------------------------------------
# Other libraries' logging


def test_other_libraries_log_one_line_at_debug_level(runner, corpus):
    folder = corpus[0]
    for verbosity in ([], ["-v"]):
        result = runner.invoke(main, ["info", str(folder / "bad_ifd.tif"), str(folder / "j2k.dcm"),
                                      *verbosity])
        assert result.stderr == (
            f"error: {folder / 'bad_ifd.tif'}: TIFF file holds no image\n"
            f"error: {folder / 'j2k.dcm'}: cannot decode the compressed (JPEG 2000 Image "
            "Compression (Lossless Only)) DICOM pixel data, truncated or corrupt file (pillow: "
            "cannot identify image file)\n")
    result = runner.invoke(main, ["info", str(folder / "bad_ifd.tif"), str(folder / "j2k.dcm"),
                                  "-vv"])
    lines = result.stderr.splitlines()
    # tifffile warned twice, pydicom logged a traceback: one debug line each, then gmmseg's error.
    tiff = [line for line in lines if line.startswith("debug: tifffile")]
    dicom = [line for line in lines if line.startswith("debug: pydicom")]
    assert len(tiff) == 1 and "invalid offset to first page" in tiff[0]
    assert len(dicom) == 1 and "object at 0x" in dicom[0]  # their own words, one line
    assert len(error_lines(result.stderr)) == 2
    # -vv shows the tracebacks of the errors too: gmmseg's, after its line.
    assert result.stderr.count("info: traceback of the error above") == 2


def test_vv_shows_gmmseg_debug_lines_and_not_pillows(runner, corpus):
    result = runner.invoke(main, ["info", str(corpus[0] / "good.png"), "-vv"])
    assert result.exit_code == 0
    assert "debug: read " in result.stderr
    assert not [line for line in result.stderr.splitlines() if not line.startswith("debug: ")]
    assert "STREAM" not in result.stderr and "PIL" not in result.stderr


def test_configure_logging_routes_by_origin_and_level():
    import io

    stream = io.StringIO()
    root_level = logging.getLogger().level
    try:
        for level, expected in [
                (logging.WARNING, ["warning: own warning"]),
                (logging.INFO, ["info: own info", "warning: own warning",
                                "info: distributed.scheduler: Scheduler at: tcp://x"]),
                (logging.DEBUG, ["debug: own debug", "info: own info", "warning: own warning",
                                 "debug: tifffile: invalid offset", "debug: somelib: first line",
                                 "info: distributed.scheduler: Scheduler at: tcp://x"])]:
            stream.seek(0)
            stream.truncate()
            configure_logging(level, stream)
            own = logging.getLogger("gmmseg.test")
            own.debug("own debug")
            own.info("own info")
            own.warning("own warning")
            logging.getLogger("tifffile").warning("invalid offset")
            logging.getLogger("tifffile").warning("invalid offset")  # a repeat: dropped
            logging.getLogger("PIL.PngImagePlugin").debug("STREAM b'IHDR'")  # never
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("somelib").exception("first line\nsecond line")
            logging.getLogger("distributed.scheduler").info("Scheduler at: tcp://x")
            assert stream.getvalue().splitlines() == expected
        # Installed again, it replaces itself: one line per record still.
        configure_logging(logging.WARNING, stream)
        stream.seek(0)
        stream.truncate()
        logging.getLogger("gmmseg").warning("once")
        assert stream.getvalue() == "warning: once\n"
    finally:
        configure_logging(logging.WARNING)
        logging.getLogger().setLevel(root_level)


def test_dask_logs_only_with_v_and_the_dashboard_once(runner, corpus, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    folder = tmp_path / "in"
    folder.mkdir()
    PILImage.fromarray(_blocks()).save(folder / "good.png")
    quiet = runner.invoke(main, ["batch", str(folder), "-o", str(tmp_path / "a"), "-k", "2",
                                 "-j", "1", "--scheduler", "local"])
    assert quiet.exit_code == 0, quiet.output
    # gmmseg's own lines only: the progress line, and the dashboard's address once
    # where bokeh serves it (the dask extra brings bokeh).
    lines = quiet.stderr.splitlines()
    dashboard = [line for line in lines if line.startswith("Dask dashboard: http://")]
    assert len(dashboard) == (1 if importlib.util.find_spec("bokeh") else 0)
    assert lines == dashboard + [line for line in lines if line.startswith("segment 1/1:")]
    assert len(lines) == len(dashboard) + 1
    verbose = runner.invoke(main, ["batch", str(folder), "-o", str(tmp_path / "b"), "-k", "2",
                                   "-j", "1", "--scheduler", "local", "-v"])
    assert verbose.exit_code == 0
    assert "info: distributed.scheduler: Scheduler at:" in verbose.stderr


def test_the_dashboard_address_is_shown_once():
    from gmmseg.batch import BatchProgress
    from gmmseg.cli.batch import _progress_printer

    printed = []
    with click.Context(click.Command("batch")) as ctx:
        ctx.meta["gmmseg.quiet"] = False
        progress, close = _progress_printer()
        original, click.echo = click.echo, lambda text, err=False: printed.append(text)
        try:
            progress(BatchProgress("segment", 2, 0, 0, 0, 0.0))
            for done in (0, 1, 2):
                progress(BatchProgress("segment", 2, done, 0, 0, 1.0,
                                       {"input": "a", "status": "ok"} if done else None,
                                       dashboard="http://127.0.0.1:40000/status"))
        finally:
            click.echo = original
        close()
    assert printed[0] == "Dask dashboard: http://127.0.0.1:40000/status"
    assert sum("dashboard" in line for line in printed) == 1


def test_the_dashboard_of_a_local_cluster_needs_bokeh(monkeypatch):
    import importlib.util

    from gmmseg.batch.executors import _dashboard

    class Client:
        dashboard_link = "http://127.0.0.1:8787/status"

    assert _dashboard(Client(), local=False) == "http://127.0.0.1:8787/status"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bokeh" else real_find_spec(name, *a))
    assert _dashboard(Client(), local=True) is None


# --------------------------------------------------------------------------
# One style, flags, plurals


def test_click_usage_errors_say_error_in_lower_case(runner):
    for args, code, text in [
            (["segment", "x.png", "-k", "many"], 2,
             "error: Invalid value for '-k' / '--n-components'"),
            (["segment", "x.png", "--no-such-option"], 2, "error: No such option"),
            (["nosuch"], 2, "error: No such command 'nosuch'"),
            (["segment"], 2, "error: Missing argument 'IMAGES...'"),
            (["fit", "x.png", "-k", "2", "-o", "model.txt"], 2, "error: Invalid value for"),
            (["apply", "missing.npz", "x.png", "-o", "out"], 1,
             "error: missing.npz: no such file")]:
        result = runner.invoke(main, args)
        assert result.exit_code == code, result.output
        assert text in result.stderr and not re.search(r"^Error:", result.output, re.M)
    usage = runner.invoke(main, ["segment", "x.png", "-k", "many"])
    assert usage.stderr.startswith("Usage: ") and "Try 'main segment --help'" in usage.stderr


def test_library_hints_become_flags_in_cli_messages(runner, tmp_path):
    assert in_flags("choose one with series=UID: a; b") == "choose one with --series UID: a; b"
    assert in_flags("use gmmseg.batch.find_inputs and run_batch") == "use gmmseg batch"
    assert in_flags("n_components=300 means ...; choose K with gmmseg.pipeline.select_k or use "
                    "a smaller n_components") == (
        "-k 300 means ...; choose K with gmmseg select-k or use a smaller -k")
    assert in_flags("up to 3 s (max_iter=100)") == "up to 3 s (--max-iter 100)"
    # A folder of two DICOM series: the library says series=UID, the CLI --series UID.
    import shutil

    folder = tmp_path / "two"
    folder.mkdir()
    for file in sorted((DATA / "mr_series").iterdir()):
        shutil.copy(file, folder / file.name)
    shutil.copy(DATA / "ct_small.dcm", folder / "ct.dcm")
    with pytest.raises(gmmseg.ImageReadError, match="choose one with series=UID: "):
        gmmseg.read_image(folder)
    result = runner.invoke(main, ["info", str(folder)])
    assert "choose one with --series UID: " in result.stderr and "series=" not in result.stderr


# scikit-learn's own wording, which its estimator checks match (mixture/_validation.py).
_SKLEARN_WORDING = {"sample(s)", "feature(s)"}


def test_messages_hold_no_plural_in_parentheses():
    """No message says "(s)": counted() says "1 channel", "3 channels"."""
    found = []
    for path in sorted((ROOT / "gmmseg").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef,
                                           ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings and re.search(r"[a-z]\(s\)", node.value)
                    and node.value not in _SKLEARN_WORDING):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


def test_counts_of_one_are_singular(runner, tmp_path):
    grey = tmp_path / "grey.png"
    PILImage.fromarray(_blocks()[..., 0]).save(grey)
    info = runner.invoke(main, ["info", str(grey)])
    assert ", 1 channel gray," in info.stdout
    one = runner.invoke(main, ["segment", str(grey), "-k", "1", "-o", str(tmp_path / "o")])
    assert one.exit_code == 0, one.output
    assert ": 1 segment, " in one.stdout
    assert not re.search(r"\b1 (segments|EM iterations|connected regions)", one.stdout)
    batch = runner.invoke(main, ["batch", str(tmp_path), "-o", str(tmp_path / "b"), "-k", "1",
                                 "-j", "1", "--include", "grey.png"])
    assert "1 input: 1 segmented" in batch.stdout


# --------------------------------------------------------------------------
# Symbolic links


def test_real_path_does_not_raise_on_a_link_loop(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    assert real_path(tmp_path / "a").parent == real_path(tmp_path)
    with pytest.raises(gmmseg.ImageReadError, match=r"a: symbolic link loop"):
        gmmseg.read_image(tmp_path / "a")


def test_a_link_loop_as_output_folder_fails_its_inputs_only(runner, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    PILImage.fromarray(_blocks()).save(src / "top.png")
    PILImage.fromarray(_blocks(1)).save(src / "sub" / "deep.png")
    out.mkdir()
    os.symlink("sub", out / "sub")  # out/sub -> out/sub: a loop
    result = runner.invoke(main, ["batch", str(src), "-o", str(out), "-k", "2", "-j", "1", "-r"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: sub/deep.png: ")
    assert (out / "top_labels.png").exists()


# --------------------------------------------------------------------------
# Large K


def test_k_beyond_a_label_map_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="n_components must be at most 65535"):
        segment(tmp_path / "not_read.png", 65536)
    with pytest.raises(ValueError, match="at most 65535"):
        segment(tmp_path / "not_read.png", [2, 70000])


def test_k_far_beyond_the_pixels_is_announced_before_the_fit(monkeypatch):
    img = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)  # 64 pixels
    params = n_free_parameters(5, 5)  # lab + position: 5 features
    assert params > 64
    events = []
    fit = GaussianMixture.fit

    def logged_fit(self, X, *args, **kwargs):
        events.append(("fit", self.max_iter))  # the estimate's probe runs one iteration
        return fit(self, X, *args, **kwargs)

    monkeypatch.setattr(GaussianMixture, "fit", logged_fit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: events.append(str(message))
        segment(img, 5, random_state=0)
    messages = [e for e in events if isinstance(e, str)]
    assert len(messages) == 1
    message = messages[0]
    assert events.index(message) < events.index(("fit", 100))  # said before the fit
    assert message.startswith(f"n_components=5 means {params} free parameters for 64 fit pixels, "
                              f"{64 / params:.2g} pixels each: fewer pixels than parameters")
    assert "the fit takes up to about " in message and "per EM iteration, max_iter=100" in message
    assert message.endswith("choose K with gmmseg.pipeline.select_k or use a smaller n_components")
    assert not caught  # shown through showwarning, as a terminal would


def test_a_slow_fit_is_announced_with_its_estimate(monkeypatch):
    pipeline_segment = sys.modules["gmmseg.pipeline.segment"]

    img = np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8)
    estimates = []

    def fake_cost(model, X, n_label=None):
        estimates.append((model.n_components, len(X), n_label))
        return FitCost(iteration=2.0, start=50.0, total=cost_total)

    monkeypatch.setattr(pipeline_segment, "estimate_fit_cost", fake_cost)
    cost_total = 250.0
    with pytest.warns(LargeModelWarning, match=r"n_components=11 means 230 free parameters for "
                      r"3,600 fit pixels, 16 pixels each; the fit takes up to about 4 min 10 s "
                      r"here \(2.0 s per EM iteration, max_iter=3\)"):
        segment(img, 11, max_iter=3, tol=1e6, random_state=0)
    assert estimates == [(11, 3600, 3600)]
    cost_total = 5.0  # quick: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segment(img, 11, max_iter=3, tol=1e6, random_state=0)
    segment(img, 10, max_iter=3, tol=1e6, random_state=0)  # K that 'auto' tries: not even estimated
    assert len(estimates) == 2


def test_the_cli_prints_the_announcement_before_the_fit_ends(runner, tmp_path, monkeypatch):
    pipeline_segment = sys.modules["gmmseg.pipeline.segment"]

    photo = tmp_path / "photo.png"
    PILImage.fromarray(_blocks()).save(photo)
    monkeypatch.setattr(pipeline_segment, "estimate_fit_cost",
                        lambda model, X, n_label=None: FitCost(1.0, 10.0, 4000.0))

    def failing_fit(self, X, *args, **kwargs):
        raise MemoryError("stopped here")

    monkeypatch.setattr(GaussianMixture, "fit", failing_fit)
    result = runner.invoke(main, ["segment", str(photo), "-k", "12", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    warning, error = result.stderr.splitlines()
    assert warning.startswith(f"warning: {photo}: -k 12 means ")
    assert "up to about 1 h 6 min here (1.0 s per EM iteration, --max-iter 100); choose K with " \
           "gmmseg select-k or use a smaller -k" in warning
    assert error == f"error: {photo}: out of memory (stopped here)"


def test_estimate_fit_cost_scales_its_measured_parts(monkeypatch):
    """Known answer with the two timings fixed: the arithmetic of the estimate."""
    import gmmseg.mixture._cost as cost

    monkeypatch.setattr(cost, "_iteration_seconds", lambda probe, k, ctype, model: 0.5)
    monkeypatch.setattr(cost, "_seconds", lambda fn, *args: 0.001)
    X = np.random.default_rng(0).normal(size=(100_000, 3)).astype(np.float32)
    k = 64
    rows = max(4096, -(-2**20 // k))  # probe rows: 16384
    per_row = 0.5 / rows
    per_pass = 0.001 / 20_000  # a nearest-centre pass over the 20000 rows k-means++ seeds on
    got = estimate_fit_cost(GaussianMixture(k, max_iter=40, n_init=2, init_trials=10), X, 250_000)
    start = 10 * 20_000 * (k * (2 + int(np.log(k))) * per_pass + 40 * per_row)
    assert got.iteration == pytest.approx(per_row * 100_000)
    assert got.start == pytest.approx(2 * start)
    assert got.total == pytest.approx(2 * (start + 40 * per_row * 100_000) + per_row * 250_000)
    # Without start-up trials k-means++ seeds on all rows, and random starts need no seeding.
    plain = estimate_fit_cost(GaussianMixture(k, init_trials=1, init_params="random"), X)
    assert plain.start == 0.0


def test_estimate_fit_cost_measures_a_real_iteration():
    X = np.random.default_rng(0).normal(size=(5000, 2)).astype(np.float32)
    cost = estimate_fit_cost(GaussianMixture(3, max_iter=10), X)
    assert 0 < cost.iteration and 0 < cost.start < cost.total
    assert cost.total >= 10 * cost.iteration


# --------------------------------------------------------------------------
# Model files


def test_model_files_are_never_unpickled(tmp_path, monkeypatch):
    load = np.load

    def guarded(*args, **kwargs):
        assert kwargs.get("allow_pickle") is False
        return load(*args, **kwargs)

    monkeypatch.setattr(np, "load", guarded)
    names = ["weights_", "means_"]
    everything = {"format_version": np.array(1), "info": np.array("{}"),
                  "checksum": np.array("x")}
    cases = {
        "pickled.npz": (pickle.dumps({"weights_": 1}), "not an .npz archive"),
        "objects.npz": ({**everything, "format": np.array("gmmseg.GaussianMixture"),
                         "weights_": np.array([{"a": 1}], dtype=object),
                         "means_": np.array([None], dtype=object)},
                        "it holds Python objects, which gmmseg never loads"),
        "other.npz": ({"a": np.arange(2)}, "an .npz archive of a, without gmmseg's format entry"),
        "short.npz": ({**everything, "format": np.array("gmmseg.GaussianMixture")},
                      "no 'weights_' array"),
        "damaged.npz": (b"PK\x03\x04 and then nothing of a zip", "a damaged .npz archive"),
        "binary.json": (b"\x89PNG\r\n\x1a\n\x00\xff", "not JSON text"),
        "list.json": (b"[1, 2]", "JSON without gmmseg's format entry"),
    }
    for name, (content, problem) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                np.savez(path, **content)
        with pytest.raises(ModelFileError) as info:
            read_model_file(path, names)
        assert str(info.value) == f"{path}: not a readable gmmseg model file ({problem})"
        assert "pickle" not in str(info.value).removeprefix(str(path)).lower()
