"""Drawing one synthetic picture: a cluttered background and, for an object class, its shape in its colour and texture.

Each object class is one :class:`ObjectSpec`: a shape from :data:`SHAPES`, a saturated colour and a fill texture
from :data:`TEXTURES`, drawn at a random position, scale and tilt on a cluttered background (noise, a soft
gradient, lines and blobs in muted colours). Colour alone separates the classes in RGB; shape and texture still
separate them in gray. Everything is drawn from the ``rng`` passed in, in a fixed order: a picture is a function
of that generator's seed alone.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Box = tuple[int, int, int, int]
# The object's diameter as a fraction of the image's short side: (lo, hi), drawn uniformly.
DEFAULT_OBJECT_SCALE = (0.4, 0.8)
Point = tuple[float, float]
# Draws the object's mask (fill 255) centred at (cx, cy) with radius r, tilted by angle (radians).
ShapeFn = Callable[[ImageDraw.ImageDraw, float, float, float, float], None]
# The "dark" cells of a texture from the pixel grid in texture periods (u, v) relative to the object's centre.
TextureFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _ring_points(n: int, start: float = -math.pi / 2, radii: tuple[float, ...] = (1.0,)) -> list[Point]:
    """``n`` vertices on the unit circle from angle ``start``, radii cycling through ``radii`` (a star: two)."""
    return [
        (
            radii[k % len(radii)] * math.cos(start + 2 * math.pi * k / n),
            radii[k % len(radii)] * math.sin(start + 2 * math.pi * k / n),
        )
        for k in range(n)
    ]


def _fit_unit_disc(points: list[Point]) -> list[Point]:
    s = 1 / max(math.hypot(x, y) for x, y in points)
    return [(x * s, y * s) for x, y in points]


def _cross(a: float = 0.3) -> list[Point]:
    s = 1 / math.hypot(a, 1.0)
    arms = [
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
        (-a, 1),
    ]
    return [(x * s, y * s) for x, y in arms]


def _heart(n: int = 48) -> list[Point]:
    ts = [2 * math.pi * k / n for k in range(n)]
    return _fit_unit_disc(
        [
            (
                16 * math.sin(t) ** 3,
                -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)),
            )
            for t in ts
        ]
    )


def _bar(half_height: float = 0.35) -> list[Point]:
    s = 1 / math.hypot(1.0, half_height)
    return [(-s, -half_height * s), (s, -half_height * s), (s, half_height * s), (-s, half_height * s)]


# Polygon outlines within the unit disc, so that any tilt stays inside the object's radius.
UNIT_POLYGONS: dict[str, list[Point]] = {
    "triangle": _ring_points(3),
    "square": _ring_points(4, start=math.pi / 4),
    "pentagon": _ring_points(5),
    "hexagon": _ring_points(6, start=0.0),
    "star": _ring_points(10, radii=(1.0, 0.42)),
    "cross": _cross(),
    "arrow": _fit_unit_disc(
        [(-1, -0.25), (0.2, -0.25), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.25), (-1, 0.25)]
    ),
    "bar": _bar(),
    "heart": _heart(),
}


def _disc(draw: ImageDraw.ImageDraw, x: float, y: float, radius: float, fill: int) -> None:
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)


def _circle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, angle: float) -> None:
    _disc(draw, cx, cy, r, 255)


def _ring(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, angle: float) -> None:
    _disc(draw, cx, cy, r, 255)
    _disc(draw, cx, cy, 0.55 * r, 0)


def _crescent(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, angle: float) -> None:
    _disc(draw, cx, cy, r, 255)
    _disc(draw, cx + 0.45 * r * math.cos(angle), cy + 0.45 * r * math.sin(angle), 0.8 * r, 0)


def _polygon(unit: list[Point]) -> ShapeFn:
    def draw_polygon(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, angle: float) -> None:
        cos, sin = math.cos(angle), math.sin(angle)
        draw.polygon(
            [(cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos)) for x, y in unit], fill=255
        )

    return draw_polygon


SHAPES: dict[str, ShapeFn] = {
    "circle": _circle,
    "ring": _ring,
    "crescent": _crescent,
    **{name: _polygon(unit) for name, unit in UNIT_POLYGONS.items()},
}

TEXTURES: dict[str, TextureFn] = {
    "solid": lambda u, v: np.zeros(u.shape, dtype=bool),
    "stripes": lambda u, v: np.floor(u + v) % 2 == 1,
    "hstripes": lambda u, v: np.floor(v * 1.5) % 2 == 1,
    "rings": lambda u, v: np.floor(np.hypot(u, v) * 1.5) % 2 == 1,
    "checker": lambda u, v: (np.floor(u) + np.floor(v)) % 2 == 1,
    "dots": lambda u, v: (u - np.floor(u) - 0.5) ** 2 + (v - np.floor(v) - 0.5) ** 2 < 0.09,
}


@dataclass(frozen=True)
class ObjectSpec:
    """One object class: its folder name, a shape from :data:`SHAPES`, an RGB colour, a texture from
    :data:`TEXTURES`."""

    name: str
    shape: str
    rgb: tuple[int, int, int]
    texture: str

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {sorted(SHAPES)}")
        if self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; expected one of {sorted(TEXTURES)}")


# Hues are far apart and saturated; backgrounds and distractors are not. The order fixes the class numbers.
OBJECT_SPECS: tuple[ObjectSpec, ...] = (
    ObjectSpec("red-circle", "circle", (220, 30, 30), "solid"),
    ObjectSpec("green-triangle", "triangle", (30, 165, 50), "stripes"),
    ObjectSpec("blue-square", "square", (40, 70, 225), "checker"),
    ObjectSpec("yellow-star", "star", (245, 205, 20), "dots"),
    ObjectSpec("magenta-cross", "cross", (215, 40, 200), "rings"),
    ObjectSpec("cyan-ring", "ring", (20, 200, 215), "hstripes"),
    ObjectSpec("orange-hexagon", "hexagon", (250, 130, 20), "checker"),
    ObjectSpec("purple-arrow", "arrow", (125, 40, 195), "solid"),
    ObjectSpec("lime-pentagon", "pentagon", (150, 230, 40), "rings"),
    ObjectSpec("pink-heart", "heart", (255, 110, 170), "dots"),
    ObjectSpec("navy-crescent", "crescent", (25, 35, 150), "hstripes"),
    ObjectSpec("teal-bar", "bar", (0, 130, 125), "stripes"),
)


def render_image(
    spec: ObjectSpec | None,
    rng: np.random.Generator,
    min_size: int,
    max_size: int,
    object_scale: tuple[float, float] = DEFAULT_OBJECT_SCALE,
) -> tuple[Image.Image, Box | None]:
    """One RGB image: a cluttered background and, unless ``spec`` is None (clutter), the class object.

    The object's drawing diameter (2 x radius; its shape fits in that disc) is a fraction of the image's short
    side drawn uniformly from ``object_scale`` = (lo, hi). The box is the bounding box of the object's mask, so it
    is tight around the drawn pixels.
    """
    width, height = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        _distractor(draw, rng, width, height)
    if spec is None:
        return image, None
    # Halving is exact in floating point: the default (0.4, 0.8) draws uniform(0.2, 0.4), the pinned bytes.
    lo, hi = object_scale
    radius = float(rng.uniform(lo / 2, hi / 2)) * min(width, height)
    cx = float(rng.uniform(radius, width - radius))
    cy = float(rng.uniform(radius, height - radius))
    angle = float(rng.uniform(-20, 20)) * math.pi / 180
    mask = Image.new("L", (width, height), 0)
    SHAPES[spec.shape](ImageDraw.Draw(mask), cx, cy, radius, angle)
    jitter = rng.integers(-15, 16, size=3)
    base = np.clip(np.array(spec.rgb) + jitter, 0, 255)
    fill = _fill(spec.texture, base, width, height, cx, cy, radius)
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
        # The diagonal's coin is tossed only for a line: the order of draws from rng is part of the pinned bytes.
        diagonal = [(x0, y0), (x1, y1)] if rng.random() < 0.5 else [(x0, y1), (x1, y0)]
        draw.line(diagonal, color, int(rng.integers(1, 4)))
    elif kind == 1:
        draw.ellipse([x0, y0, x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2], color)
    else:
        draw.rectangle([x0, y0, x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3], color)


def _muted(
    rng: np.random.Generator, max_sat: float, min_val: float, max_val: float
) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, max_sat), rng.uniform(min_val, max_val))


def _fill(
    texture: str, color: np.ndarray, width: int, height: int, cx: float, cy: float, r: float
) -> np.ndarray:
    # Two tones of the class colour (full and 40%): the texture survives grayscale, the hue stays the class's.
    period = max(3.0, r / 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    dark = TEXTURES[texture]((xx - cx) / period, (yy - cy) / period)
    return np.where(dark[..., None], color * 0.4, color).astype(np.uint8)
