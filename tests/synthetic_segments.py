"""Synthetic 8-bit images with a known number of clear segments, for ``-k auto``.

Used by ``tests/test_k_auto.py`` and ``scripts/check_select_k.py``.

:func:`blob_photo` draws a background and ``k - 1`` smooth blobs, each
segment one colour (grey level, 4-band value), with Gaussian noise of 3 to
9 grey levels, and for one seed in three a gentle illumination gradient
(the image multiplied by ``1 + g t``, ``t`` from -1 to 1 across it, ``g``
4-10%).  The segments are clear: colours at least 70 levels apart (30 for
grey) and, under the gradient, at least 4 noise sd apart everywhere.
Values are rounded and clipped to 0..255, so dark and bright segments pile
up at 0 and 255 as a camera's would.
"""

import numpy as np

KINDS = {"rgb": 3, "gray": 1, "bands": 4}


def blob_layout(k, size, rng):
    """``(size, size)`` int labels: background 0 and ``k - 1`` non-overlapping blobs.

    Each blob is star-shaped with a smooth wavy edge, radius 10-17% of the
    side, at least 3 pixels from every other blob.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for _ in range(1000):
        labels = np.zeros((size, size), np.int32)
        for j in range(1, k):
            for _ in range(200):
                r0 = rng.uniform(0.10, 0.17) * size
                cy, cx = rng.uniform(1.3 * r0, size - 1.3 * r0, 2)
                theta = np.arctan2(yy - cy, xx - cx)
                r = np.hypot(yy - cy, xx - cx)
                amplitude, phase = rng.uniform(0, 0.15, 3), rng.uniform(0, 2 * np.pi, 3)
                edge = r0 * (1 + sum(a * np.cos((i + 2) * theta + p)
                                     for i, (a, p) in enumerate(zip(amplitude, phase))))
                if not labels[r <= edge + 3].any():
                    labels[r <= edge] = j
                    break
            else:
                break  # no room: start the layout again
        else:
            return labels
    raise RuntimeError(f"no layout of {k} blobs fits a {size} x {size} image")


def _colours(k, channels, noise, gradient, rng):
    """``(k, channels)`` segment colours that stay clear, and the gradient that allows it."""
    separation = 70.0 if channels > 1 else 30.0
    t = np.linspace(-1, 1, 5)[:, None]
    for attempt in range(1, 20001):
        if attempt % 2000 == 0:
            gradient /= 1.5  # too strong for k clear colours: gentler
        colours = rng.uniform(10, 245, (k, channels))
        d = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
        if d[np.triu_indices(k, 1)].min(initial=np.inf) < separation:
            continue
        lit = colours[:, None, :] * (1 + gradient * t)  # (k, 5, channels)
        closest = min((np.linalg.norm(lit[a][:, None] - lit[b][None], axis=-1).min()
                       for a in range(k) for b in range(a + 1, k)), default=np.inf)
        if closest >= 4 * noise:
            return colours, gradient
    raise RuntimeError(f"no {k} clear colours")


def blob_photo(k, seed, kind="rgb", size=96):
    """A ``size`` x ``size`` uint8 image of ``k`` clear segments and its true labels.

    Parameters
    ----------
    k : int
        Number of segments (background and ``k - 1`` blobs).
    seed : int
        Seeds everything; ``seed % 3 == 2`` adds an illumination gradient.
    kind : {"rgb", "gray", "bands"}
        3 channels (an RGB photo), 1 (returned as ``(size, size)``) or 4.

    Returns
    -------
    image : (size, size, C) or (size, size) uint8 ndarray
    labels : (size, size) int32 ndarray
    """
    rng = np.random.default_rng(seed)
    labels = blob_layout(k, size, rng)
    noise = rng.uniform(3, 9)
    gradient = rng.uniform(0.04, 0.10) if seed % 3 == 2 else 0.0
    colours, gradient = _colours(k, KINDS[kind], noise, gradient, rng)
    image = colours[labels]
    if gradient:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
        t = (np.cos(angle) * xx + np.sin(angle) * yy) / np.sqrt(2)
        image = image * (1 + gradient * t)[..., None]
    image = image + rng.normal(0, noise, image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return (image[..., 0] if kind == "gray" else image), labels


def photo_set(n, kind="rgb", size=96):
    """The ``n`` seeded images of the benchmark: seed i has ``2 + i % 5`` segments."""
    for seed in range(n):
        k = 2 + seed % 5
        image, _ = blob_photo(k, seed, kind, size)
        yield seed, k, image


def four_quadrants(size=160, noise=4.0, seed=0):
    """An RGB photo of four flat colour quadrants with mild noise, uint8, and its labels."""
    rng = np.random.default_rng(seed)
    colours = np.array([[200, 40, 40], [40, 180, 60], [40, 60, 200], [230, 220, 60]], float)
    labels = np.zeros((size, size), np.int32)
    half = size // 2
    labels[:half, half:] = 1
    labels[half:, :half] = 2
    labels[half:, half:] = 3
    image = colours[labels] + rng.normal(0, noise, (size, size, 3))
    return np.clip(np.round(image), 0, 255).astype(np.uint8), labels
