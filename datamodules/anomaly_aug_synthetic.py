"""A procedural MVTec-layout dataset with known defect masks (the demo's and the tests' data).

Two classes, written as `<root>/<class>/{train/good, test/good, test/<defect>, ground_truth/<defect>}` with
masks named `<stem>_mask.png` (0 / 255), exactly the MVTec AD layout:

* `stripes` (a texture): coloured sinusoidal stripes with jittered angle, period, phase and noise.
  Defects: `scratch` (thin dark line segments), `blob` (a coloured ellipse), `bend` (a local warp of the
  stripes), `fade` (a region of lost contrast).
* `disc` (an object with a fixed orientation): an orange disc with a dark marker on top, jittered in
  position, on a noisy grey background. Defects: `rotated` (the marker turned 90-270 degrees), `crack` (a
  dark polyline), `spot` (a blue-green stain), `missing` (a wedge cut out).

The simulator cannot produce `scratch`, `bend`, `crack` and `missing` (thin lines, warps, cut-outs are
not among its shapes or operations), so they test generalisation beyond the simulated anomalies;
`blob`, `spot`, `fade` and `rotated` are close to what it simulates (opaque paste, colour shift, blur,
local rotation). Generation is deterministic in `seed` and written atomically (temp folder, rename).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("stripes", "disc")
DEFECTS = {"stripes": ("scratch", "blob", "bend", "fade"), "disc": ("rotated", "crack", "spot", "missing")}
UNSIMULATED = {"scratch", "bend", "crack", "missing"}  # shapes/operations the simulator never produces

Array = np.ndarray


def _grid(size: int) -> tuple[Array, Array]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return y / size, x / size


def _ellipse(size: int, rng: np.random.Generator, r: tuple[float, float] = (0.08, 0.18)) -> Array:
    y, x = _grid(size)
    cy, cx = rng.uniform(0.25, 0.75, 2)
    ry, rx = rng.uniform(*r, 2)
    t = rng.uniform(0, np.pi)
    dy, dx = y - cy, x - cx
    u, v = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1


def _segments(size: int, rng: np.random.Generator, points: Array, width: float) -> Array:
    """Pixels within `width` px of the polyline through `points` (normalised coordinates)."""
    y, x = _grid(size)
    near = np.zeros((size, size), dtype=bool)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        d = np.array([y1 - y0, x1 - x0])
        t = np.clip(((y - y0) * d[0] + (x - x0) * d[1]) / max(d @ d, 1e-9), 0, 1)
        dist = np.hypot(y - (y0 + t * d[0]), x - (x0 + t * d[1])) * size
        near |= dist <= width / 2
    return near


# --------------------------------------------------------------------------------------------------
# stripes


def _stripes(size: int, rng: np.random.Generator, phase_field: Array | None = None,
             contrast: Array | None = None) -> Array:
    y, x = _grid(size)
    angle = np.deg2rad(30 + rng.uniform(-5, 5))
    period = (1 / 8) * rng.uniform(0.9, 1.1)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase
                  + (0 if phase_field is None else phase_field))
    amount = 0.5 + 0.5 * wave * (1 if contrast is None else contrast)
    c1 = np.array([0.15, 0.25, 0.55]) + rng.uniform(-0.03, 0.03, 3)
    c2 = np.array([0.85, 0.80, 0.40]) + rng.uniform(-0.03, 0.03, 3)
    image = c1 + (c2 - c1) * amount[..., None]
    return image + rng.normal(0, 0.03, image.shape)


def _stripes_sample(size: int, rng: np.random.Generator, defect: str | None) -> tuple[Array, Array]:
    mask = np.zeros((size, size), dtype=bool)
    if defect in (None, "scratch", "blob"):
        image = _stripes(size, rng)
    elif defect == "bend":
        y, x = _grid(size)
        cy, cx, r = *rng.uniform(0.3, 0.7, 2), rng.uniform(0.1, 0.18)
        bump = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (r / 2) ** 2))
        image = _stripes(size, rng, phase_field=np.pi * bump)
        mask = bump > 0.25
    else:  # fade
        mask = _ellipse(size, rng)
        image = _stripes(size, rng, contrast=np.where(mask, 0.15, 1.0))
    if defect == "scratch":
        for _ in range(rng.integers(1, 3)):
            start = rng.uniform(0.15, 0.85, 2)
            points = np.vstack([start, start + rng.uniform(-0.3, 0.3, 2)])
            line = _segments(size, rng, points, width=2.5)
            image[line] = rng.uniform(0.0, 0.08)
            mask |= line
    elif defect == "blob":
        mask = _ellipse(size, rng, (0.05, 0.12))
        image[mask] = rng.uniform(0, 1, 3) * 0.6 + 0.2 + rng.normal(0, 0.02, (int(mask.sum()), 3))
    return image, mask


# --------------------------------------------------------------------------------------------------
# disc


def _disc_sample(size: int, rng: np.random.Generator, defect: str | None) -> tuple[Array, Array]:
    y, x = _grid(size)
    image = np.full((size, size, 3), 0.2) + rng.normal(0, 0.02, (size, size, 3))
    cy, cx = 0.5 + rng.uniform(-0.03, 0.03, 2)
    radius = 0.32 + rng.uniform(-0.01, 0.01)
    disc = np.hypot(y - cy, x - cx) <= radius
    image[disc] = np.array([0.9, 0.55, 0.15]) + rng.uniform(-0.03, 0.03, 3)

    def marker(angle_deg: float) -> Array:
        a = np.deg2rad(angle_deg)
        my, mx = cy - 0.2 * np.cos(a), cx + 0.2 * np.sin(a)
        return (np.abs(y - my) <= 0.06) & (np.abs(x - mx) <= 0.06)

    normal_marker = marker(rng.uniform(-3, 3))
    mask = np.zeros((size, size), dtype=bool)
    if defect == "rotated":
        turned = marker(rng.uniform(90, 270))
        image[turned] = (0.1, 0.1, 0.35)
        mask = normal_marker | turned
    else:
        image[normal_marker] = (0.1, 0.1, 0.35)
    if defect == "crack":
        start = np.array([cy, cx]) + rng.uniform(-0.15, 0.15, 2)
        points = start + np.cumsum(rng.uniform(-0.12, 0.12, (4, 2)), 0)
        line = _segments(size, rng, points, width=2.0) & disc
        image[line] = 0.05
        mask = line
    elif defect == "spot":
        stain = _ellipse(size, rng, (0.05, 0.1)) & disc
        image[stain] = (0.2, 0.6, 0.55)
        mask = stain
    elif defect == "missing":
        angle = np.arctan2(x - cx, -(y - cy))
        start = rng.uniform(-np.pi, np.pi)
        width = rng.uniform(0.35, 0.7)
        wedge = disc & (np.mod(angle - start, 2 * np.pi) < width) & (np.hypot(y - cy, x - cx) > 0.08)
        image[wedge] = 0.2 + rng.normal(0, 0.02, (int(wedge.sum()), 3))
        mask = wedge
    image = image + rng.normal(0, 0.02, image.shape)
    return image, mask


SAMPLERS: dict[str, Callable[[int, np.random.Generator, str | None], tuple[Array, Array]]] = {
    "stripes": _stripes_sample, "disc": _disc_sample,
}


def _save(image: Array, path: Path) -> None:
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path)


def write_class(root: Path, name: str, size: int, n_train: int, n_test_good: int, n_per_defect: int,
                seed: int) -> None:
    rng = np.random.default_rng([seed, CLASSES.index(name)])
    sample = SAMPLERS[name]
    base = root / name
    for split, count in (("train", n_train), ("test", n_test_good)):
        (base / split / "good").mkdir(parents=True)
        for i in range(count):
            _save(sample(size, rng, None)[0], base / split / "good" / f"{i:03d}.png")
    for defect in DEFECTS[name]:
        (base / "test" / defect).mkdir(parents=True)
        (base / "ground_truth" / defect).mkdir(parents=True)
        for i in range(n_per_defect):
            image, mask = sample(size, rng, defect)
            _save(image, base / "test" / defect / f"{i:03d}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(base / "ground_truth" / defect / f"{i:03d}_mask.png")


def generate(root: str | Path, size: int = 64, n_train: int = 120, n_test_good: int = 30, n_per_defect: int = 10,
             seed: int = 0, classes: tuple[str, ...] = CLASSES) -> Path:
    """Write the dataset under `root` once (a complete folder or none); return `root`."""
    root = Path(root)
    if (root / ".complete").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for name in classes:
            write_class(tmp, name, size, n_train, n_test_good, n_per_defect, seed)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first
            if not (root / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
