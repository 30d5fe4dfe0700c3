"""Tests of gmmseg.batch: inputs, isolation, resume, shared model, Dask, summaries."""

import csv
import hashlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, unquote

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from gmmseg import GaussianMixture, GmmsegError, ModelFileError, OutputExistsError
from gmmseg.batch import (
    BatchInterrupted,
    BatchItem,
    BatchProgress,
    distinct_stems,
    find_inputs,
    format_progress,
    items_from_files,
    run_batch,
)
from gmmseg.io import file_stem, read_image, write_png
from gmmseg.pipeline import (check_model_input, fit_shared_model, load_shared_model,
                             save_shared_model)

ROOT = Path(__file__).resolve().parents[1]
KW = {"n_components": 3, "random_state": 0}
COLOURS = np.array([(200, 30, 30), (40, 170, 60), (30, 40, 200)], np.float64)
CSV_COLUMNS = [
    "input", "status", "error", "warnings", "width", "height", "depth", "channels",
    "valid_pixels", "n_components", "n_iter", "converged", "mean_log_likelihood", "n_regions",
    "size_units", "valid_size", "segment_sizes", "seconds", "windows", "labels", "overlay",
    "regions", "regions_overlay", "report", "proba", "log_likelihood",
]


def regions(layout, size=64):
    """Which of the three colours each pixel has: (size, size) int in 0..2."""
    yy, xx = np.mgrid[0:size, 0:size]
    if layout == "columns":
        return xx * 3 // size
    if layout == "rows":
        return yy * 3 // size
    # rings around the centre, outer ring largest
    r = np.hypot(yy - size / 2, xx - size / 2)
    return np.digitize(r, [size / 6, size / 3])


def three_colours(layout, seed=0, size=64):
    rng = np.random.default_rng(seed)
    img = COLOURS[regions(layout, size)] + rng.normal(0, 6, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_tree(root):
    """Good images (one nested), a corrupt PNG, a non-image, an all-nodata raster."""
    (root / "sub").mkdir(parents=True)
    write_png(root / "good_a.png", three_colours("columns", 1))
    write_png(root / "good_b.png", three_colours("rows", 2))
    write_png(root / "sub" / "nested.png", three_colours("rings", 3))
    (root / "corrupt.png").write_bytes((root / "good_a.png").read_bytes()[:300])
    (root / "not_an_image.png").write_text("this is a text file, not a picture\n")
    tifffile.imwrite(root / "nodata.tif", np.full((64, 64), np.nan, np.float32))
    (root / "readme.txt").write_text("not picked up: not an image suffix\n")
    return root


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "in")


def all_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*")
                  if p.is_file())


def outputs_of(out_dir):
    """Every output except the batch's own summary files."""
    skip = {"batch_summary.csv", "batch_summary.json", "index.html"}
    return [f for f in all_files(out_dir) if f not in skip]


def by_input(report):
    return {row["input"]: row for row in report.rows}


def labels_of(path):
    return np.asarray(PILImage.open(path))


# --- finding inputs ----------------------------------------------------------------


def test_find_inputs_recursive_include_exclude(tmp_path):
    root = tmp_path / "in"
    for rel in ["a.png", "b.TIF", "notes.txt", ".hidden.png", "sub/c.png", "sub/deep/d.jpg",
                "raw/e.png", ".git/f.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")

    def names(**kw):
        return [item.name for item in find_inputs(root, **kw)]

    assert names() == ["a.png", "b.TIF"]
    assert names(recursive=True) == ["a.png", "b.TIF", "raw/e.png", "sub/c.png",
                                     "sub/deep/d.jpg"]
    assert names(recursive=True, include=["*.PNG"]) == ["a.png", "raw/e.png", "sub/c.png"]
    assert names(recursive=True, include=["sub/*"]) == ["sub/c.png", "sub/deep/d.jpg"]
    assert names(recursive=True, exclude=["raw/*", "*.jpg"]) == ["a.png", "b.TIF",
                                                                 "sub/c.png"]
    assert names(include=["*"]) == ["a.png", "b.TIF", "notes.txt"]
    item = find_inputs(root, recursive=True, include=["d.jpg"])[0]
    assert (item.path, item.rel_dir, item.stem) == (root / "sub/deep/d.jpg", "sub/deep", "d")
    # An output folder inside the input folder is not scanned; the input folder
    # itself cannot be the output folder.
    assert names(recursive=True, out_dir=root / "raw") == ["a.png", "b.TIF", "sub/c.png",
                                                           "sub/deep/d.jpg"]
    with pytest.raises(GmmsegError, match="output folder is the input folder"):
        find_inputs(root, out_dir=root)
    with pytest.raises(GmmsegError, match="not a folder"):
        find_inputs(root / "a.png")


def test_batch_item_refuses_paths_that_leave_the_output_folder():
    with pytest.raises(ValueError, match="without '..'"):
        BatchItem(Path("x.png"), "../elsewhere", "x", "x.png")
    with pytest.raises(ValueError, match="without '..'"):
        BatchItem(Path("x.png"), "/tmp", "x", "x.png")
    with pytest.raises(ValueError, match="not a plain file name"):
        BatchItem(Path("x.png"), ".", "../x", "x.png")
    assert BatchItem(Path("x.png"), "", "..", "x.png").rel_dir == "."


# --- a folder with good and bad inputs ---------------------------------------------


def test_batch_isolates_bad_files_and_mirrors_the_tree(tree, tmp_path):
    out = tmp_path / "out"
    before = {p: digest(tree / p) for p in all_files(tree)}
    items = find_inputs(tree, recursive=True)
    report = run_batch(items, out, segment_kwargs=KW, jobs=2)

    rows = by_input(report)
    assert list(rows) == ["corrupt.png", "good_a.png", "good_b.png", "nodata.tif",
                          "not_an_image.png", "sub/nested.png"]
    assert {name for name, r in rows.items() if r["status"] == "ok"} == {
        "good_a.png", "good_b.png", "sub/nested.png"}
    assert "truncated or corrupt" in rows["corrupt.png"]["error"]
    assert "not a supported image file" in rows["not_an_image.png"]["error"]
    assert "no valid pixels" in rows["nodata.tif"]["error"]
    for row in report.failures:
        assert "\n" not in row["error"] and "Traceback" not in row["error"]
        assert row["outputs"] == {}
    assert (report.n_ok, report.n_failed, report.n_skipped, report.exit_code) == (3, 3, 0, 1)

    # Outputs mirror the input tree; nothing for the bad files, no temporaries.
    files = outputs_of(out)
    for stem in ("good_a", "good_b", "sub/nested"):
        for suffix in ("_labels.png", "_overlay.png", "_report.json"):
            assert f"{stem}{suffix}" in files
    assert not any(f.split("/")[-1].startswith(("corrupt", "nodata", "not_an")) for f in files)
    assert not any(part.startswith(".") for f in files for part in f.split("/"))
    nested = rows["sub/nested.png"]
    assert nested["outputs"]["labels"] == "sub/nested_labels.png"
    assert (nested["width"], nested["height"], nested["channels"]) == (64, 64, 3)
    assert nested["n_components"] == 3 and nested["converged"] is True
    assert nested["n_iter"] >= 1 and np.isfinite(nested["mean_log_likelihood"])
    assert nested["seconds"] > 0 and len(nested["shares"]) == 3
    labels = labels_of(out / "sub/nested_labels.png")
    assert labels.shape == (64, 64) and set(np.unique(labels)) == {0, 1, 2}

    # Inputs untouched, nothing written beside them or outside OUT_DIR.
    assert {p: digest(tree / p) for p in all_files(tree)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_summary_csv_json_and_gallery(tree, tmp_path):
    out = tmp_path / "out"
    report = run_batch(find_inputs(tree, recursive=True), out, segment_kwargs=KW, jobs=1)

    with open(out / "batch_summary.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == CSV_COLUMNS
        csv_rows = list(reader)
    assert [r["input"] for r in csv_rows] == [r["input"] for r in report.rows]
    assert [r["status"] for r in csv_rows] == [r["status"] for r in report.rows]
    good = next(r for r in csv_rows if r["input"] == "good_a.png")
    assert (good["width"], good["n_components"], good["converged"]) == ("64", "3", "True")
    assert good["labels"] == "good_a_labels.png" and good["error"] == ""
    regions_doc = json.loads((out / "good_a_report.json").read_text())["regions"]
    assert good["n_regions"] == str(regions_doc["n_regions"]) != ""
    assert good["regions"] == "good_a_regions.png"
    bad = next(r for r in csv_rows if r["input"] == "nodata.tif")
    assert "no valid pixels" in bad["error"] and bad["labels"] == ""

    doc = json.loads((out / "batch_summary.json").read_text())
    assert doc["counts"] == {"total": 6, "ok": 3, "skipped": 0, "failed": 3, "cancelled": 0}
    assert doc["interrupted"] is False and doc["options"]["segment"] == KW
    assert doc["rows"] == json.loads(json.dumps(report.rows))

    page = (out / "index.html").read_text()
    for row in report.rows:
        assert html.escape(row["input"]) in page
    for row in report.failures:
        assert html.escape(row["error"]) in page
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    # Colour photos: the input, its segments and its connected regions.
    assert len(sources) == 3 * report.n_ok
    for row in report.rows:
        if row["status"] == "ok":
            assert sorted(row["thumbnails"]) == ["input", "overlay", "regions_overlay"]
            assert html.escape(quote(row["thumbnails"]["regions_overlay"], safe="/")) in page
    for src in sources:
        assert not src.startswith(("/", "file:", "http")) and ".." not in src
        assert (out / unquote(html.unescape(src))).is_file()
    for href in re.findall(r'href="([^"]+)"', page):
        assert (out / unquote(html.unescape(href))).is_file()


def test_file_names_are_escaped_in_the_gallery(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    name = 'a <b> & "c" #1.png'
    write_png(src / name, three_colours("columns"))
    report = run_batch(find_inputs(src), tmp_path / "out", segment_kwargs=KW, jobs=1)
    page = report.gallery.read_text()
    assert "<b>" not in page and html.escape(name) in page
    for src_attr in re.findall(r'<img [^>]*src="([^"]+)"', page):
        assert (tmp_path / "out" / unquote(html.unescape(src_attr))).is_file()


# --- interruption and resume -------------------------------------------------------


def stamp(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def comparable(out_dir, rel):
    """File contents, with the timings (and paths) of reports left out."""
    path = out_dir / rel
    if rel.endswith("_report.json"):
        doc = json.loads(path.read_text())
        doc.pop("timings")
        return doc
    return path.read_bytes()


def test_interrupted_then_resumed_equals_uninterrupted(tree, tmp_path):
    items = find_inputs(tree, recursive=True)
    full = run_batch(items, tmp_path / "full", segment_kwargs=KW, jobs=1)

    def stop_after_two(p):
        if p.ok == 2:
            raise KeyboardInterrupt

    part_dir = tmp_path / "part"
    with pytest.raises(BatchInterrupted) as info:
        run_batch(items, part_dir, segment_kwargs=KW, jobs=1, progress=stop_after_two)
    part = info.value.report
    assert (part.n_ok, part.n_failed, part.n_cancelled, part.interrupted) == (2, 1, 3, True)
    doc = json.loads((part_dir / "batch_summary.json").read_text())
    assert doc["interrupted"] is True and doc["counts"]["cancelled"] == 3
    done = [r["input"] for r in part.rows if r["status"] == "ok"]
    stamps = {rel: stamp(part_dir / rel) for rel in outputs_of(part_dir)}

    events = []
    resumed = run_batch(items, part_dir, segment_kwargs=KW, jobs=1, resume=True,
                        progress=events.append)
    statuses = {r["input"]: r["status"] for r in resumed.rows}
    assert [n for n, s in statuses.items() if s == "skipped"] == done
    assert statuses["sub/nested.png"] == "ok" and resumed.n_failed == 3
    # Nothing complete was processed again: no event for it, files untouched.
    assert {e.row["input"] for e in events if e.row} == set(statuses) - set(done)
    assert events[0].skipped == 2 and events[-1].remaining == 0
    for rel, before in stamps.items():
        assert stamp(part_dir / rel) == before, rel
    # Same outputs as the uninterrupted run.
    assert outputs_of(part_dir) == outputs_of(tmp_path / "full")
    for rel in outputs_of(part_dir):
        assert comparable(part_dir, rel) == comparable(tmp_path / "full", rel), rel
    skipped = by_input(resumed)[done[0]]
    full_row = by_input(full)[done[0]]
    for key in ("width", "n_components", "n_iter", "mean_log_likelihood", "outputs",
                "thumbnails", "shares"):
        assert skipped[key] == full_row[key], key


def test_interrupt_with_worker_processes_keeps_finished_work(tree, tmp_path):
    # More inputs than the pool can hold un-cancellable (running + queued: 2 + 3).
    for i in range(8):
        write_png(tree / f"more_{i}.png", three_colours("rows", 30 + i))
    items = find_inputs(tree, recursive=True)

    def stop_at_first(p):
        if p.row is not None:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(BatchInterrupted) as info:
        run_batch(items, out, segment_kwargs=KW, jobs=2, progress=stop_at_first)
    report = info.value.report
    assert report.n_ok + report.n_failed >= 1 and report.n_cancelled >= 1
    for row in report.rows:
        if row["status"] == "ok":  # finished inputs are complete and recorded
            assert all((out / rel).is_file() for rel in row["outputs"].values())
    assert not any(part.startswith(".") for f in all_files(out) for part in f.split("/"))
    resumed = run_batch(items, out, segment_kwargs=KW, jobs=2, resume=True)
    assert resumed.n_skipped == report.n_ok and resumed.n_ok + resumed.n_skipped == 11


def test_resume_after_kill_minus_9(tree, tmp_path):
    """A real SIGKILL part-way; resume finishes the batch as if nothing happened."""
    for i in range(4):
        write_png(tree / f"more_{i}.png", three_colours("columns" if i % 2 else "rings", 10 + i))
    items = find_inputs(tree, recursive=True)
    full = tmp_path / "full"
    run_batch(items, full, segment_kwargs=KW, jobs=1)

    out = tmp_path / "killed"
    code = (f"from gmmseg.batch import find_inputs, run_batch\n"
            f"run_batch(find_inputs({str(tree)!r}, recursive=True), {str(out)!r}, "
            f"segment_kwargs={KW!r}, jobs=1)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not (out / "good_b_report.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "batch did not start"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "batch_summary.json").exists()

    resumed = run_batch(items, out, segment_kwargs=KW, jobs=1, resume=True)
    assert resumed.n_skipped >= 2 and resumed.n_ok + resumed.n_skipped == 7
    assert outputs_of(out) == outputs_of(full)
    for rel in outputs_of(out):
        assert comparable(out, rel) == comparable(full, rel), rel


def test_resume_does_not_trust_incomplete_outputs(tree, tmp_path):
    items = find_inputs(tree, recursive=True)
    out = tmp_path / "out"
    run_batch(items, out, segment_kwargs=KW, jobs=1)
    reference = {rel: comparable(out, rel) for rel in outputs_of(out)}
    # As a kill between two files would leave them: no report, a stray temporary.
    (out / "good_a_report.json").unlink()
    (out / ".good_a_report.json.tmp-0badf00d").write_text('{"half": ')
    (out / "thumbs/sub/.nested_input.thumb.png.tmp-0123abcd").write_bytes(b"\x89PNG")
    # A report whose labels are gone, and a report that does not parse.
    (out / "good_b_labels.png").unlink()
    (out / "sub/nested_report.json").write_text('{"input": ')

    resumed = run_batch(items, out, segment_kwargs=KW, jobs=1, resume=True)
    statuses = {r["input"]: r["status"] for r in resumed.rows}
    assert statuses["good_a.png"] == statuses["good_b.png"] == "ok"
    assert statuses["sub/nested.png"] == "ok"
    for rel, content in reference.items():
        assert comparable(out, rel) == content, rel
    assert outputs_of(out) == sorted(reference)  # the stray temporaries are gone

    # Thumbnails are not outputs: missing ones are made again, the input stays skipped.
    thumb = out / by_input(resumed)["good_a.png"]["thumbnails"]["overlay"]
    thumb_bytes = thumb.read_bytes()
    thumb.unlink()
    again = run_batch(items, out, segment_kwargs=KW, jobs=1, resume=True)
    assert again.n_skipped == 3 and again.n_ok == 0
    assert thumb.read_bytes() == thumb_bytes
    # Outputs of a run with another K are not taken as complete.
    other_k = run_batch(items, out, segment_kwargs={**KW, "n_components": 2}, jobs=1,
                        resume=True)
    assert other_k.n_skipped == 0
    assert "n_components=3" in by_input(other_k)["good_a.png"]["error"]


def test_resume_with_an_unusable_output_folder_fails_only_its_inputs(tree, tmp_path):
    items = find_inputs(tree, recursive=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the batch wants a folder")
    (out / ".batch_summary.csv.tmp-0123abcd").write_text("half")
    report = run_batch(items, out, segment_kwargs=KW, jobs=1, resume=True)
    rows = by_input(report)
    assert rows["good_a.png"]["status"] == rows["good_b.png"]["status"] == "ok"
    assert rows["sub/nested.png"]["status"] == "failed"
    assert "sub" in rows["sub/nested.png"]["error"]
    assert not (out / ".batch_summary.csv.tmp-0123abcd").exists()


def test_resume_redoes_inputs_without_the_regions_asked_for(tree, tmp_path):
    items = [i for i in find_inputs(tree, recursive=True) if i.name.startswith("good")]
    out = tmp_path / "out"
    run_batch(items, out, segment_kwargs=KW, jobs=1)
    with_regions = run_batch(items, out, segment_kwargs=KW, save_kwargs={"regions": 2},
                             jobs=1, resume=True)
    assert with_regions.n_ok == 2 and with_regions.n_skipped == 0
    assert (out / "good_a_regions.png").is_file()
    again = run_batch(items, out, segment_kwargs=KW, save_kwargs={"regions": 2},
                      jobs=1, resume=True)
    assert again.n_skipped == 2
    other = run_batch(items, out, segment_kwargs=KW, save_kwargs={"regions": 3},
                      jobs=1, resume=True)
    assert other.n_ok == 2
    report = json.loads((out / "good_a_report.json").read_text())
    assert report["regions"]["requested"] == 3
    # The default (regions cut at the default scale) and another scale are other regions.
    default = run_batch(items, out, segment_kwargs=KW, jobs=1, resume=True)
    assert default.n_ok == 2
    assert run_batch(items, out, segment_kwargs=KW, jobs=1, resume=True).n_skipped == 2
    finer = run_batch(items, out, segment_kwargs=KW, save_kwargs={"region_scale": 0.001},
                      jobs=1, resume=True)
    assert finer.n_ok == 2
    report = json.loads((out / "good_a_report.json").read_text())
    assert report["regions"]["requested"] == "auto" and report["regions"]["scale"] == 0.001
    # Regions merged before the Gaussian criterion (no "ridge" in the report)
    # are redone, even when asked for by number.
    run_batch(items, out, segment_kwargs=KW, save_kwargs={"regions": 3}, jobs=1, resume=True)
    for name in ("good_a_report.json", "good_b_report.json"):
        doc = json.loads((out / name).read_text())
        del doc["regions"]["ridge"]
        (out / name).write_text(json.dumps(doc))
    older = run_batch(items, out, segment_kwargs=KW, save_kwargs={"regions": 3},
                      jobs=1, resume=True)
    assert older.n_ok == 2 and older.n_skipped == 0
    assert run_batch(items, out, segment_kwargs=KW, save_kwargs={"regions": 3},
                     jobs=1, resume=True).n_skipped == 2


def test_existing_outputs_need_overwrite(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_png(src / "a.png", three_colours("columns"))
    items = find_inputs(src)
    run_batch(items, tmp_path / "out", segment_kwargs=KW, jobs=1)
    again = run_batch(items, tmp_path / "out", segment_kwargs=KW, jobs=1)
    assert again.rows[0]["status"] == "failed" and "exists" in again.rows[0]["error"]
    forced = run_batch(items, tmp_path / "out", segment_kwargs=KW, jobs=1, overwrite=True)
    assert forced.rows[0]["status"] == "ok"


def test_same_output_names_in_one_folder_get_the_suffix_in_the_stem(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_png(src / "scene.png", three_colours("columns"))
    tifffile.imwrite(src / "scene.tif", three_colours("rows"))
    write_png(src / "other.png", three_colours("rows"))
    report = run_batch(find_inputs(src), out, segment_kwargs=KW, jobs=1)
    rows = by_input(report)
    assert [r["status"] for r in report.rows] == ["ok", "ok", "ok"]
    assert rows["scene.png"]["outputs"]["labels"] == "scene_png_labels.png"
    assert rows["scene.tif"]["outputs"]["labels"] == "scene_tif_labels.png"
    assert rows["other.png"]["outputs"]["labels"] == "other_labels.png"  # no clash: as documented
    # Each label map is its own input's: columns in one, rows in the other.
    columns = cv2.imread(str(out / "scene_png_labels.png"), cv2.IMREAD_UNCHANGED)
    by_rows = cv2.imread(str(out / "scene_tif_labels.png"), cv2.IMREAD_UNCHANGED)
    assert (columns[0] != columns[0, 0]).any() and (columns[:, 0] == columns[0, 0]).all()
    assert (by_rows[:, 0] != by_rows[0, 0]).any() and (by_rows[0] == by_rows[0, 0]).all()
    # The same batch resumed finds both sets of outputs again.
    again = run_batch(find_inputs(src), out, segment_kwargs=KW, jobs=1, resume=True)
    assert [r["status"] for r in again.rows] == ["skipped"] * 3


def test_distinct_stems_resolve_every_clash_in_a_fixed_way():
    def stems(names, rel_dirs=None):
        items = [BatchItem(Path(n), (rel_dirs or {}).get(n, "."), file_stem(n), n)
                 for n in names]
        return [item.stem for item in distinct_stems(items)]

    assert stems(["a.png", "b.png"]) == ["a", "b"]
    assert stems(["scan.nii.gz", "scan.dcm"]) == ["scan_nii_gz", "scan_dcm"]
    assert stems(["Coffee.PNG", "coffee.jpg"]) == ["Coffee_PNG", "coffee_jpg"]  # case-blind
    # An input really named like a qualified stem keeps its name; the clash moves on.
    assert stems(["coffee.png", "coffee.jpg", "coffee_png.tif"]) == [
        "coffee_png_2", "coffee_jpg", "coffee_png"]
    # The same name from two folders, given one by one: numbered.
    assert stems(["a/x.png", "b/x.png"]) == ["x_png", "x_png_2"]
    # Different output folders never clash.
    assert stems(["s/x.png", "t/x.jpg"], {"s/x.png": "s", "t/x.jpg": "t"}) == ["x", "x"]
    # Idempotent: what run_batch applies again changes nothing.
    items = distinct_stems([BatchItem(Path(n), ".", file_stem(n), n) for n in ("c.png", "c.jpg")])
    assert distinct_stems(items) == items


def test_items_from_files_takes_a_file_given_twice_once(tmp_path):
    items = items_from_files([tmp_path / "a.png", f"{tmp_path}/./a.png", tmp_path / "a.jpg"])
    assert [(item.path.name, item.stem) for item in items] == [("a.png", "a_png"),
                                                                ("a.jpg", "a_jpg")]


# --- containment -------------------------------------------------------------------


def test_nothing_is_written_outside_the_output_folder(tmp_path):
    src, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    (src / "sub").mkdir(parents=True)
    outside.mkdir()
    write_png(outside / "elsewhere.png", three_colours("rows"))
    (src / "linked.png").symlink_to(outside / "elsewhere.png")
    (src / "linked_dir").symlink_to(outside, target_is_directory=True)
    write_png(src / "x...png", three_colours("columns"))
    write_png(src / "sub" / "a..b.png", three_colours("rings"))
    write_png(src / "sub" / "c.png", three_colours("rings", 4))
    # An output subfolder that is a link to somewhere else.
    (src / "trap").mkdir()
    write_png(src / "trap" / "t.png", three_colours("columns", 5))
    out.mkdir()
    (out / "trap").symlink_to(outside, target_is_directory=True)
    outside_before = all_files(outside)

    items = find_inputs(src, recursive=True)
    # linked_dir is not entered
    assert [i.name for i in items] == ["linked.png", "x...png", "sub/a..b.png", "sub/c.png",
                                       "trap/t.png"]
    report = run_batch(items, out, segment_kwargs=KW, jobs=1)
    rows = by_input(report)
    assert "outside the output folder" in rows["trap/t.png"]["error"]
    assert all(rows[n]["status"] == "ok" for n in ["x...png", "linked.png", "sub/a..b.png"])
    assert rows["linked.png"]["outputs"]["labels"] == "linked_labels.png"
    assert (out / "x.._labels.png").is_file()
    assert (out / "sub" / "a..b_labels.png").is_file()
    assert all_files(outside) == outside_before
    for path in out.rglob("*"):
        if path.is_file():
            resolved = path.resolve()
            assert resolved.is_relative_to(out.resolve()) or resolved == (
                outside / "elsewhere.png"), path


def test_an_output_never_replaces_an_input(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_png(folder / "a.png", three_colours("columns"))
    write_png(folder / "a_labels.png", three_colours("rows"))
    before = digest(folder / "a_labels.png")
    items = items_from_files([folder / "a.png", folder / "a_labels.png"])
    report = run_batch(items, folder, segment_kwargs=KW, jobs=1, overwrite=True)
    rows = by_input(report)
    assert "would replace an input" in rows[str(folder / "a.png")]["error"]
    assert digest(folder / "a_labels.png") == before


# --- progress ----------------------------------------------------------------------


def test_progress_events(tree, tmp_path):
    events = []
    report = run_batch(find_inputs(tree, recursive=True), tmp_path / "out",
                       segment_kwargs=KW, jobs=2, progress=events.append)
    assert all(isinstance(e, BatchProgress) and e.phase == "segment" for e in events)
    assert events[0].row is None and events[0].done == 0 and events[0].eta is None
    assert len(events) == 1 + len(report.rows)
    assert [e.done for e in events] == list(range(len(events)))
    last = events[-1]
    assert (last.ok, last.failed, last.remaining, last.eta) == (3, 3, 0, 0.0)
    assert {e.row["input"] for e in events[1:]} == {r["input"] for r in report.rows}
    line = format_progress(last)
    assert line.startswith("segment 6/6: 3 ok, 3 failed, 0 skipped, 0 left")


# --- shared model ------------------------------------------------------------------


def colour_labels(labels, layout):
    """Majority label of each colour region; also checks each region is one label."""
    reg = regions(layout)
    result = []
    for c in range(3):
        values, counts = np.unique(labels[reg == c], return_counts=True)
        assert counts.max() >= 0.95 * counts.sum()
        result.append(int(values[np.argmax(counts)]))
    return result


LAYOUTS = {"cols.png": "columns", "rows.png": "rows", "rings.png": "rings"}


@pytest.fixture
def layouts(tmp_path):
    src = tmp_path / "layouts"
    src.mkdir()
    for i, (name, layout) in enumerate(LAYOUTS.items()):
        write_png(src / name, three_colours(layout, seed=20 + i))
    return src


def test_shared_model_gives_labels_the_same_meaning(layouts, tmp_path):
    out = tmp_path / "out"
    items = find_inputs(layouts)
    events = []
    report = run_batch(items, out, segment_kwargs=KW, shared_model=True, per_image=1000,
                       jobs=1, progress=events.append)
    fit_events = [e for e in events if e.phase == "fit"]
    assert [e.ok for e in fit_events] == [0, 1, 2, 3] and fit_events[-1].remaining == 0
    assert events[-1].phase == "segment" and events[-1].ok == 3
    assert report.exit_code == 0 and report.shared_model == out / "shared_model.npz"
    meanings = {name: colour_labels(labels_of(out / f"{Path(name).stem}_labels.png"), layout)
                for name, layout in LAYOUTS.items()}
    first = meanings["cols.png"]
    assert sorted(first) == [0, 1, 2]
    assert all(m == first for m in meanings.values()), meanings
    model, _ = load_shared_model(out / "shared_model.npz")
    assert model.metadata_["shared_fit"]["images"] == 3
    assert model.metadata_["shared_fit"]["pooled_pixels"] == 3000
    for row in report.rows:
        assert row["n_components"] == 3

    # The model file is an output: reused with resume, kept without overwrite.
    before = stamp(out / "shared_model.npz")
    resumed = run_batch(items, out, segment_kwargs=KW, shared_model=True, resume=True, jobs=1)
    assert resumed.n_skipped == 3 and stamp(out / "shared_model.npz") == before
    with pytest.raises(OutputExistsError, match="shared model exists"):
        run_batch(items, out, segment_kwargs=KW, shared_model=True, jobs=1)


def test_fit_apply_round_trip_and_band_check(layouts, tmp_path):
    paths = sorted(layouts.iterdir())
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(paths[0].read_bytes()[:100])
    model, extractor = fit_shared_model([*paths, corrupt], n_components=3, per_image=800,
                                        random_state=0)
    shared = model.metadata_["shared_fit"]
    assert shared["images"] == 3 and shared["pooled_pixels"] == 2400
    assert shared["skipped"][0][0] == str(corrupt) and "truncated" in shared["skipped"][0][1]

    model_file = tmp_path / "model.npz"
    save_shared_model(model_file, model, extractor)
    with pytest.raises(OutputExistsError):
        save_shared_model(model_file, model, extractor)
    loaded, loaded_fx = load_shared_model(model_file)
    np.testing.assert_array_equal(loaded.means_, model.means_)
    assert loaded_fx.to_dict() == extractor.to_dict()

    six = tmp_path / "six_bands.npy"
    np.save(six, np.zeros((64, 64, 6), np.float32))
    direct = run_batch(items_from_files(paths), tmp_path / "direct", model=model,
                       feature_extractor=extractor, jobs=1)
    applied = run_batch(items_from_files([*paths, six]), tmp_path / "applied", model=loaded,
                        jobs=2, segment_kwargs={"random_state": 0})
    rows = by_input(applied)
    assert rows[str(six)]["status"] == "failed"
    assert rows[str(six)]["error"] == "model expects 3 channels, image has 6"
    assert applied.n_ok == 3 and direct.n_ok == 3
    for path in paths:
        name = f"{path.stem}_labels.png"
        assert digest(tmp_path / "applied" / name) == digest(tmp_path / "direct" / name)
    meanings = [colour_labels(labels_of(tmp_path / "applied" / f"{Path(n).stem}_labels.png"), lay)
                for n, lay in LAYOUTS.items()]
    assert meanings[0] == meanings[1] == meanings[2]

    with pytest.raises(GmmsegError, match=r"six_bands\.npy: model expects 3 channels, image has 6"):
        check_model_input(read_image(six), extractor)
    json_file = tmp_path / "model.json"
    save_shared_model(json_file, model, extractor)
    np.testing.assert_array_equal(load_shared_model(json_file)[0].means_, model.means_)
    plain = tmp_path / "plain.npz"
    GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(50, 3))).save(
        plain)
    with pytest.raises(ModelFileError, match="stores no feature extractor"):
        load_shared_model(plain)


def test_shared_model_needs_a_usable_input(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("no image")
    with pytest.raises(GmmsegError, match="the input cannot be used to fit a shared model: .*bad.png: not a supported"):
        fit_shared_model([bad], n_components=2)


# --- Dask --------------------------------------------------------------------------


def test_dask_gives_identical_label_maps(tree, tmp_path):
    distributed = pytest.importorskip("distributed")
    items = find_inputs(tree, recursive=True)
    local = run_batch(items, tmp_path / "local", segment_kwargs=KW, jobs=2)
    dask = run_batch(items, tmp_path / "dask", segment_kwargs=KW, jobs=2, scheduler="local")
    # An existing cluster, reached by its address.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote = run_batch(items, tmp_path / "remote", segment_kwargs=KW,
                           scheduler=cluster.scheduler_address,
                           threads=local.options["threads"])
    for other in (dask, remote):
        assert [(r["input"], r["status"], r["error"]) for r in other.rows] == [
            (r["input"], r["status"], r["error"]) for r in local.rows]
        assert other.options["threads"] == local.options["threads"]
    for row in local.rows:
        for kind in ("labels", "overlay"):
            if row["status"] == "ok":
                rel = row["outputs"][kind]
                assert digest(tmp_path / "dask" / rel) == digest(tmp_path / "local" / rel)
                assert digest(tmp_path / "remote" / rel) == digest(tmp_path / "local" / rel)
    resumed = run_batch(items, tmp_path / "dask", segment_kwargs=KW, jobs=2, scheduler="local",
                        resume=True)
    assert resumed.n_skipped == 3 and resumed.n_failed == 3
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(
            Exception, match="cannot connect to the Dask scheduler"):
        run_batch(items, tmp_path / "none", segment_kwargs=KW, scheduler="tcp://127.0.0.1:1")


# --- gallery in a browser ----------------------------------------------------------


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="headless Chromium not installed (apt-get install chromium)")
def test_gallery_renders_in_headless_chromium(tree, tmp_path):
    run_batch(find_inputs(tree, recursive=True), tmp_path / "out", segment_kwargs=KW, jobs=1)
    shot = tmp_path / "gallery.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_gallery.py"), str(tmp_path / "out"),
         "--screenshot", str(shot), "--require"],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 images, 0 not loaded" in result.stdout and shot.is_file()


# --- physical units, side files, volumes -------------------------------------------


def test_summary_gives_physical_sizes_and_resume_finds_maps_beside_their_side_files(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    nib = pytest.importorskip("nibabel")
    src = tmp_path / "in"
    src.mkdir()
    scene = three_colours("columns", 4).transpose(2, 0, 1)
    with rasterio.open(src / "scene.tif", "w", driver="GTiff", width=64, height=64, count=3,
                       dtype="uint8", crs="EPSG:32618",
                       transform=rasterio.Affine(30.0, 0, 500000, 0, -30.0, 4000000)) as dst:
        dst.write(scene)
    z, y, x = np.mgrid[0:16, 0:24, 0:20]
    volume = np.where((z - 8) ** 2 + (y - 12) ** 2 + (x - 10) ** 2 < 36, 100.0, 10.0)
    volume += np.random.default_rng(0).normal(0, 2, volume.shape)
    nib.save(nib.Nifti1Image(volume.astype(np.float32).transpose(2, 1, 0), np.diag([2, 2, 2, 1])),
             src / "ball.nii.gz")
    out = tmp_path / "out"
    report = run_batch(find_inputs(src), out, segment_kwargs=KW, jobs=1)
    rows = by_input(report)
    geo, ball = rows["scene.tif"], rows["ball.nii.gz"]
    # 30 m pixels: 0.09 ha each; 2 mm voxels: 0.008 mL each.
    assert geo["size_units"] == "ha" and ball["size_units"] == "mL"
    assert sum(geo["segment_sizes"]) == pytest.approx(64 * 64 * 0.09)
    assert geo["valid_size"] == pytest.approx(64 * 64 * 0.09)
    assert sum(ball["segment_sizes"]) == pytest.approx(16 * 24 * 20 * 0.008)
    assert [round(s / 0.09) for s in geo["segment_sizes"]] == [
        round(share * 64 * 64) for share in geo["shares"]]
    with open(out / "batch_summary.csv", newline="") as fh:
        csv_rows = {r["input"]: r for r in csv.DictReader(fh)}
    assert csv_rows["scene.tif"]["size_units"] == "ha"
    assert [float(v) for v in csv_rows["scene.tif"]["segment_sizes"].split(";")] == \
        geo["segment_sizes"]
    # The side files that name the labels are listed; the gallery shows sizes, and no
    # regions column without a photo.
    assert geo["outputs"]["labels_aux"] == "scene_labels.tif.aux.xml"
    assert (ball["outputs"]["labels_itksnap"], ball["outputs"]["labels_lut"]) == (
        "ball_labels.txt", "ball_labels.lut")
    page = (out / "index.html").read_text()
    assert "connected regions" not in page and " ha" in page and " mL" in page
    assert sorted(ball["thumbnails"]) == ["input", "overlay"]
    # Resume finds the label maps themselves, not the side files beside them.
    resumed = run_batch(find_inputs(src), out, segment_kwargs=KW, jobs=1, resume=True)
    assert [r["status"] for r in resumed.rows] == ["skipped", "skipped"]
    assert by_input(resumed)["ball.nii.gz"]["outputs"]["labels"] == "ball_labels.nii.gz"
    assert by_input(resumed)["scene.tif"]["outputs"]["labels"] == "scene_labels.tif"
    assert by_input(resumed)["ball.nii.gz"]["segment_sizes"] == ball["segment_sizes"]
