"""A small synthetic dataset in exactly the Caltech-256 layout, with ground-truth boxes: the embedded default.

Each object class is one shape in one saturated colour with one fill texture, drawn at a random position,
scale and tilt on a cluttered background (noise, a soft gradient, lines and blobs in muted colours). The last
class, ``NNN.clutter``, is background only, like Caltech's ``257.clutter``. Colour alone separates the classes
in RGB; shape and texture still separate them in gray (the inception preset), including the few files saved as
grayscale JPEGs. A few files are CMYK JPEGs, as in the real archive. Every file is a function of
(seed, class, image number) only, so a seed gives byte-identical files.
"""

from __future__ import annotations

import colorsys
import inspect
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

MARKER = "synthetic.json"
BOXES = "boxes.json"
_VERSION = 2
Box = tuple[int, int, int, int]

# (name, shape, RGB, texture). Hues are far apart and saturated; backgrounds and distractors are not.
OBJECT_SPECS: tuple[tuple[str, str, tuple[int, int, int], str], ...] = (
    ("red-circle", "circle", (220, 30, 30), "solid"),
    ("green-triangle", "triangle", (30, 165, 50), "stripes"),
    ("blue-square", "square", (40, 70, 225), "checker"),
    ("yellow-star", "star", (245, 205, 20), "dots"),
    ("magenta-cross", "cross", (215, 40, 200), "rings"),
    ("cyan-ring", "ring", (20, 200, 215), "hstripes"),
    ("orange-hexagon", "hexagon", (250, 130, 20), "checker"),
    ("purple-arrow", "arrow", (125, 40, 195), "solid"),
    ("lime-pentagon", "pentagon", (150, 230, 40), "rings"),
    ("pink-heart", "heart", (255, 110, 170), "dots"),
    ("navy-crescent", "crescent", (25, 35, 150), "hstripes"),
    ("teal-bar", "bar", (0, 130, 125), "stripes"),
)
MAX_CLASSES = len(OBJECT_SPECS) + 1  # + clutter


@dataclass(frozen=True)
class SyntheticInfo:
    """What :func:`generate_synthetic` wrote: the root, the class folders, and each object's box
    ``[x0, y0, x1, y1)`` (pixels of the saved image, end exclusive), keyed by path relative to ``root``."""

    root: Path
    class_dirs: tuple[str, ...]
    boxes: dict[str, Box]
    params: dict[str, int]


def generate_synthetic(
    root: str | Path,
    num_classes: int = 10,
    images_per_class: int = 200,
    seed: int = 0,
    min_size: int = 64,
    max_size: int = 160,
    gray_every: int = 50,
    cmyk_every: int = 50,
) -> SyntheticInfo:
    """Write ``num_classes`` folders (the last one clutter) of ``images_per_class`` JPEGs each into ``root``.

    Image sides are drawn uniformly from [min_size, max_size]. Image number i of a class is saved as a
    grayscale JPEG when ``i % gray_every == 3`` and as CMYK when ``i % cmyk_every == 5`` (0 disables).
    Files are written into a temporary sibling folder, then renamed: ``root`` is never half-written, and
    ``synthetic.json`` (written last) records the parameters. An existing ``root`` is replaced only when it
    is a synthetic set (it has the marker, or holds nothing but synthetic class folders and generator files,
    as a partial set would); anything else there is an error, never deleted.
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(
            f"num_classes must be in [2, {MAX_CLASSES}] (object classes + clutter), got {num_classes}"
        )
    if images_per_class < 1 or not 8 <= min_size <= max_size:
        raise ValueError(
            f"need images_per_class >= 1 and 8 <= min_size <= max_size, got {images_per_class}, {min_size}, {max_size}"
        )
    params = _params(num_classes, images_per_class, seed, min_size, max_size, gray_every, cmyk_every)
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename
    try:
        class_dirs = _class_dirs(num_classes)
        boxes: dict[str, Box] = {}
        for c, class_dir in enumerate(class_dirs):
            (tmp / class_dir).mkdir()
            spec = OBJECT_SPECS[c] if c < num_classes - 1 else None
            for i in range(images_per_class):
                rel = f"{class_dir}/{c + 1:03d}_{i + 1:04d}.jpg"
                image, box = render_image(spec, np.random.default_rng([seed, c, i]), min_size, max_size)
                mode = _mode(i, gray_every, cmyk_every)
                image.convert(mode).save(tmp / rel, "JPEG", quality=90)
                if box is not None:
                    boxes[rel] = box
        (tmp / BOXES).write_text(json.dumps({k: list(v) for k, v in boxes.items()}, indent=0, sort_keys=True))
        meta = {"params": params, "class_dirs": class_dirs, "images": num_classes * images_per_class}
        (tmp / MARKER).write_text(json.dumps(meta, indent=2))
        _replace(tmp, root, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SyntheticInfo(root, tuple(class_dirs), boxes, params)


def ensure_synthetic(root: str | Path, **params: Any) -> SyntheticInfo:
    """The synthetic set at ``root``, generated with ``params`` if there is none (or only a partial one).

    A complete set is used as it is, whatever parameters it was made with (``info.params`` says which):
    pointing ``data.root`` at an existing set must never rewrite it. Delete the folder to regenerate.
    """
    existing = load_synthetic(root)
    return existing if existing is not None else generate_synthetic(root, **params)


def requested_params(**params: Any) -> dict[str, int]:
    """The full parameter record (defaults filled in) that :func:`generate_synthetic` would write."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(generate_synthetic).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return _params(**{**defaults, **params})


def load_synthetic(root: str | Path) -> SyntheticInfo | None:
    """The info of a complete synthetic set at ``root``, or ``None`` if there is none (or a partial one)."""
    root = Path(root)
    if not (root / MARKER).is_file() or not (root / BOXES).is_file():
        return None
    meta = json.loads((root / MARKER).read_text())
    boxes = {k: tuple(v) for k, v in json.loads((root / BOXES).read_text()).items()}
    return SyntheticInfo(root, tuple(meta["class_dirs"]), boxes, meta["params"])  # type: ignore[arg-type]


def render_image(
    spec: tuple[str, str, tuple[int, int, int], str] | None,
    rng: np.random.Generator,
    min_size: int,
    max_size: int,
) -> tuple[Image.Image, Box | None]:
    """One RGB image: a cluttered background and, unless ``spec`` is None (clutter), the class object.

    The box is the bounding box of the object's mask, so it is tight around the drawn pixels.
    """
    width, height = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        _distractor(draw, rng, width, height)
    if spec is None:
        return image, None
    _, shape, color, texture = spec
    radius = float(rng.uniform(0.2, 0.4)) * min(width, height)
    cx = float(rng.uniform(radius, width - radius))
    cy = float(rng.uniform(radius, height - radius))
    angle = float(rng.uniform(-20, 20)) * math.pi / 180
    mask = Image.new("L", (width, height), 0)
    _draw_shape(ImageDraw.Draw(mask), shape, cx, cy, radius, angle)
    jitter = rng.integers(-15, 16, size=3)
    base = np.clip(np.array(color) + jitter, 0, 255)
    fill = _texture(texture, base, width, height, cx, cy, radius)
    image.paste(Image.fromarray(fill), (0, 0), mask)
    x0, y0, x1, y1 = mask.getbbox()  # type: ignore[misc]
    return image, (x0, y0, x1, y1)


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    # Muted base colour (saturation <= 0.25), a soft linear gradient and pixel noise: never a flat image.
    base = np.array(_muted(rng, 0.25, 0.35, 0.85)) * 255
    gx, gy = rng.uniform(-40, 40, size=2)
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = (gx * (xx / width - 0.5) + gy * (yy / height - 0.5))[..., None]
    noise = rng.normal(0, 10, size=(height, width, 3))
    return Image.fromarray(np.clip(base + ramp + noise, 0, 255).astype(np.uint8))


def _distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    color = tuple(int(v * 255) for v in _muted(rng, 0.3, 0.15, 0.95))
    x0, x1 = sorted(rng.uniform(0, width, size=2))
    y0, y1 = sorted(rng.uniform(0, height, size=2))
    kind = int(rng.integers(0, 3))
    if kind == 0:
        draw.line(
            [(x0, y0), (x1, y1)] if rng.random() < 0.5 else [(x0, y1), (x1, y0)],
            color,
            int(rng.integers(1, 4)),
        )
    elif kind == 1:
        draw.ellipse([x0, y0, x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2], color)
    else:
        draw.rectangle([x0, y0, x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3], color)


def _muted(
    rng: np.random.Generator, max_sat: float, min_val: float, max_val: float
) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, max_sat), rng.uniform(min_val, max_val))


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Vertices within the unit disc (so any tilt stays inside the object's radius)."""

    def ring(
        n: int, start: float = -math.pi / 2, radii: tuple[float, ...] = (1.0,)
    ) -> list[tuple[float, float]]:
        pts = []
        for k in range(n):
            r = radii[k % len(radii)]
            pts.append((r * math.cos(start + 2 * math.pi * k / n), r * math.sin(start + 2 * math.pi * k / n)))
        return pts

    if shape == "triangle":
        return ring(3)
    if shape == "square":
        return ring(4, start=math.pi / 4)
    if shape == "pentagon":
        return ring(5)
    if shape == "hexagon":
        return ring(6, start=0.0)
    if shape == "star":
        return ring(10, radii=(1.0, 0.42))
    if shape == "cross":
        a, s = 0.3, 1 / math.hypot(0.3, 1.0)
        pts = [
            (a, 1),
            (a, a),
            (1, a),
            (1, -a),
            (a, -a),
            (a, -1),
            (-a, -1),
            (-a, -a),
            (-1, -a),
            (-1, a),
            (-a, a),
        ]
        return [(x * s, y * s) for x, y in [*pts, (-a, 1)]]
    if shape == "arrow":
        pts = [(-1, -0.25), (0.2, -0.25), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.25), (-1, 0.25)]
        s = 1 / max(math.hypot(x, y) for x, y in pts)
        return [(x * s, y * s) for x, y in pts]
    if shape == "bar":
        s = 1 / math.hypot(1.0, 0.35)
        return [(-s, -0.35 * s), (s, -0.35 * s), (s, 0.35 * s), (-s, 0.35 * s)]
    if shape == "heart":
        ts = [2 * math.pi * k / 48 for k in range(48)]
        pts = [
            (
                16 * math.sin(t) ** 3,
                -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)),
            )
            for t in ts
        ]
        s = 1 / max(math.hypot(x, y) for x, y in pts)
        return [(x * s, y * s) for x, y in pts]
    raise ValueError(f"unknown shape {shape!r}")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float) -> None:
    def disc(x: float, y: float, radius: float, fill: int) -> None:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)

    if shape == "circle":
        disc(cx, cy, r, 255)
    elif shape == "ring":
        disc(cx, cy, r, 255)
        disc(cx, cy, 0.55 * r, 0)
    elif shape == "crescent":
        disc(cx, cy, r, 255)
        disc(cx + 0.45 * r * math.cos(angle), cy + 0.45 * r * math.sin(angle), 0.8 * r, 0)
    else:
        cos, sin = math.cos(angle), math.sin(angle)
        pts = [(cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos)) for x, y in _unit_polygon(shape)]
        draw.polygon(pts, fill=255)


def _texture(
    texture: str, color: np.ndarray, width: int, height: int, cx: float, cy: float, r: float
) -> np.ndarray:
    # Two tones of the class colour (full and 40%): the texture survives grayscale, the hue stays the class's.
    period = max(3.0, r / 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = (xx - cx) / period, (yy - cy) / period
    if texture == "solid":
        dark = np.zeros((height, width), dtype=bool)
    elif texture == "stripes":
        dark = np.floor(u + v) % 2 == 1
    elif texture == "hstripes":
        dark = np.floor(v * 1.5) % 2 == 1
    elif texture == "rings":
        dark = np.floor(np.hypot(u, v) * 1.5) % 2 == 1
    elif texture == "checker":
        dark = (np.floor(u) + np.floor(v)) % 2 == 1
    elif texture == "dots":
        dark = (u - np.floor(u) - 0.5) ** 2 + (v - np.floor(v) - 0.5) ** 2 < 0.09
    else:
        raise ValueError(f"unknown texture {texture!r}")
    out = np.where(dark[..., None], color * 0.4, color)
    return out.astype(np.uint8)


def _mode(i: int, gray_every: int, cmyk_every: int) -> str:
    if gray_every and i % gray_every == 3:
        return "L"
    if cmyk_every and i % cmyk_every == 5:
        return "CMYK"
    return "RGB"


def _class_dirs(num_classes: int) -> list[str]:
    names = [OBJECT_SPECS[c][0] for c in range(num_classes - 1)] + ["clutter"]
    return [f"{c + 1:03d}.{name}" for c, name in enumerate(names)]


def _params(
    num_classes: int,
    images_per_class: int,
    seed: int,
    min_size: int,
    max_size: int,
    gray_every: int = 50,
    cmyk_every: int = 50,
) -> dict[str, int]:
    return {
        "version": _VERSION,
        "num_classes": int(num_classes),
        "images_per_class": int(images_per_class),
        "seed": int(seed),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "gray_every": int(gray_every),
        "cmyk_every": int(cmyk_every),
    }


def _replace(tmp: Path, root: Path, params: dict[str, int]) -> None:
    existing = load_synthetic(root)
    if existing is not None and existing.params == params:
        return  # another process just wrote the same bytes: keep its copy, it may already be in use
    if root.exists():
        if not _looks_synthetic(root):
            raise FileExistsError(
                f"{root} exists and is not a synthetic dataset written by caltech_cam; "
                "remove it or point data.root elsewhere"
            )
        shutil.rmtree(root)
    try:
        os.rename(tmp, root)
    except OSError:
        # Another process renamed the same set into place first (its marker is complete): keep theirs.
        if load_synthetic(root) is None:
            raise


def _looks_synthetic(root: Path) -> bool:
    if (root / MARKER).is_file():
        return True
    # A partial set (no marker): only synthetic class folders (never Caltech's names) and generator files.
    ours = {
        f"{c:03d}.{name}"
        for c in range(1, MAX_CLASSES + 1)
        for name in [*(s[0] for s in OBJECT_SPECS), "clutter"]
    }
    return all(p.name == BOXES or (p.is_dir() and p.name in ours) for p in root.iterdir())
