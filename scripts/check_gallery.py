"""Render a batch gallery (``index.html``) in headless Chromium and check it.

Checks that every ``<img>`` of the gallery loaded (complete, with a non-zero
natural size), that the page fits a window 1280 pixels wide (``--width``)
without scrolling sideways, and that a screenshot of the page at that width
was taken and is not blank.  Without OUT_DIR, a small demo batch is made
first in a temporary folder (an 8-bit photo, a 16-bit TIFF, a 6-band
array, a NIfTI volume when nibabel is installed, a corrupt file and a file
name that needs HTML escaping).

Needs Debian's ``chromium`` package (``apt-get install chromium``); when no
Chromium is found the check is skipped with a message and exit code 0
(``--require`` turns that into a failure).

Usage::

    python scripts/check_gallery.py [OUT_DIR] [--screenshot gallery.png] [--width 1280] [--require]

Exit codes: 0 passed (or skipped), 1 failed.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
              "headless_shell")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--no-first-run", "--mute-audio", "--allow-file-access-from-files"]

# Appended to a copy of the gallery: when the page has loaded, record every
# image's state in an element that --dump-dom prints.
PROBE = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (im) { return !(im.complete && im.naturalWidth > 0); })
                     .map(function (im) { return im.getAttribute("src"); });
  var out = document.createElement("pre");
  out.id = "gallery-check";
  out.textContent = JSON.stringify({total: images.length, broken: broken,
                                    page_width: document.documentElement.scrollWidth,
                                    window_width: window.innerWidth});
  document.body.appendChild(out);
});
</script>
"""


def find_chromium(explicit=None):
    if explicit:
        return explicit if shutil.which(explicit) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def demo_batch(folder):
    """A small batch with a mix of inputs; returns its output folder."""
    import tifffile

    from gmmseg.batch import find_inputs, run_batch

    src = folder / "inputs"
    src.mkdir()
    rng = np.random.default_rng(0)
    photo = np.zeros((96, 128, 3), np.uint8)
    photo[:, :64] = (200, 40, 40)
    photo[48:, 64:] = (40, 160, 60)
    photo[:48, 64:] = (50, 60, 210)
    photo = np.clip(photo + rng.normal(0, 10, photo.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(src / "photo & <friends>.png"), photo[..., ::-1])
    tifffile.imwrite(src / "scan16.tif", (photo[..., 0].astype(np.uint16) * 200))
    bands = np.concatenate([photo, 255 - photo], axis=-1).astype(np.float32)
    np.save(src / "six_bands.npy", bands)
    (src / "broken.png").write_bytes((src / "photo & <friends>.png").read_bytes()[:100])
    try:
        import nibabel
    except ImportError:
        pass
    else:  # a ball in a box, 2.5 mm slices: the overlay is a montage of three planes
        z, y, x = np.mgrid[0:24, 0:40, 0:40]
        ball = (((z - 12) * 2.5) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 15 ** 2).astype(np.float32)
        volume = ball * 100 + rng.normal(0, 8, ball.shape).astype(np.float32)
        nibabel.save(nibabel.Nifti1Image(volume.transpose(2, 1, 0), np.diag([1, 1, 2.5, 1])),
                     src / "ball.nii.gz")
    out = folder / "out"
    run_batch(find_inputs(src), out, segment_kwargs={"n_components": 3, "random_state": 0},
              jobs=1)
    return out


def run_chromium(chromium, args, timeout=120):
    return subprocess.run([chromium, *FLAGS, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def check(out_dir, chromium, screenshot, width=1280):
    """Return a list of problems (empty: the gallery is fine)."""
    gallery = out_dir.resolve() / "index.html"
    if not gallery.is_file():
        return [f"{gallery}: no gallery"]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        text = gallery.read_text(encoding="utf-8")
        # The probe copy lives elsewhere; <base> resolves the gallery's
        # relative links against the real output folder.
        base = f'<base href="{out_dir.resolve().as_uri()}/">'
        probe_html = text.replace("<head>", "<head>" + base, 1).replace(
            "</body>", PROBE + "</body>", 1)
        probe = Path(tmp) / "probe.html"
        probe.write_text(probe_html, encoding="utf-8")
        result = run_chromium(chromium, [f"--window-size={width},1800",
                                         "--virtual-time-budget=10000", "--dump-dom",
                                         probe.as_uri()])
        match = re.search(r'<pre id="gallery-check">(.*?)</pre>', result.stdout, re.DOTALL)
        if not match:
            return [(f"chromium printed no probe result (exit {result.returncode}): "
                     f"{result.stderr.strip()[-500:]}")]
        state = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&")
                           .replace("&lt;", "<").replace("&gt;", ">"))
        n_img = len(re.findall(r"<img\b", text))
        print(f"gallery: {state['total']} images, {len(state['broken'])} not loaded")
        if state["total"] != n_img or n_img == 0:
            problems.append(f"expected {n_img} images in the rendered page, saw {state['total']}")
        problems += [f"image did not load: {src}" for src in state["broken"]]
        print(f"page width: {state['page_width']} px in a {state['window_width']} px window")
        if state["page_width"] > state["window_width"]:
            problems.append(f"the page is {state['page_width']} px wide: wider than the "
                            f"{state['window_width']} px window (scrolls sideways)")

    result = run_chromium(chromium, [f"--window-size={width},1800",
                                     f"--screenshot={screenshot}", gallery.as_uri()])
    shot = cv2.imread(str(screenshot), cv2.IMREAD_COLOR) if screenshot.exists() else None
    if shot is None:
        problems.append(f"no screenshot written (exit {result.returncode}): "
                        f"{result.stderr.strip()[-500:]}")
    else:
        print(f"screenshot: {screenshot} ({shot.shape[1]} x {shot.shape[0]})")
        if float(shot.std()) < 5:
            problems.append("the screenshot is blank")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path,
                        help="batch output folder (default: make a demo batch)")
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="where to save the screenshot (default: a temporary file)")
    parser.add_argument("--chromium", default=None, help="Chromium executable")
    parser.add_argument("--width", type=int, default=1280,
                        help="browser window width in pixels (default 1280)")
    parser.add_argument("--require", action="store_true",
                        help="fail instead of skipping when Chromium is missing")
    args = parser.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        verdict = "FAILED" if args.require else "SKIPPED"
        print(f"{verdict}: headless Chromium not found (Debian: apt-get install chromium)")
        return 1 if args.require else 0
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out_dir or demo_batch(Path(tmp))
        screenshot = args.screenshot or Path(tmp) / "gallery.png"
        problems = check(out_dir, chromium, screenshot, args.width)
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        print("gallery check passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
