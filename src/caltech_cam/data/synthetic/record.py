"""What a synthetic set is on disk: the class folders, the file names, ``boxes.json`` and the ``synthetic.json`` marker.

The marker is written last, so its presence means a complete set; it records the generator's parameters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caltech_cam.data.synthetic.draw import DEFAULT_OBJECT_SCALE, OBJECT_SPECS, Box

MARKER = "synthetic.json"
BOXES = "boxes.json"
# Bumped whenever the same parameters would draw other pixels.
VERSION = 2
MAX_CLASSES = len(OBJECT_SPECS) + 1  # + clutter
CLUTTER = "clutter"


@dataclass(frozen=True)
class SyntheticInfo:
    """What :func:`generate_synthetic` wrote: the root, the class folders, and each object's box
    ``[x0, y0, x1, y1)`` (pixels of the saved image, end exclusive), keyed by path relative to ``root``."""

    root: Path
    class_dirs: tuple[str, ...]
    boxes: dict[str, Box]
    params: dict[str, Any]


def class_dirs(num_classes: int) -> list[str]:
    """``001.red-circle``, ..., the first ``num_classes - 1`` objects, then ``NNN.clutter``."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(
            f"num_classes must be in [2, {MAX_CLASSES}] (object classes + clutter), got {num_classes}"
        )
    names = [spec.name for spec in OBJECT_SPECS[: num_classes - 1]] + [CLUTTER]
    return [f"{c + 1:03d}.{name}" for c, name in enumerate(names)]


def all_class_dirs() -> set[str]:
    """Every class folder name any parameters could produce (object classes at any number, clutter too)."""
    names = [*(spec.name for spec in OBJECT_SPECS), CLUTTER]
    return {f"{c:03d}.{name}" for c in range(1, MAX_CLASSES + 1) for name in names}


def image_file(class_dir: str, c: int, i: int) -> str:
    """Path of image ``i`` (0-based) of class ``c`` (0-based), relative to the root: ``001.red-circle/001_0001.jpg``."""
    return f"{class_dir}/{c + 1:03d}_{i + 1:04d}.jpg"


def image_mode(i: int, gray_every: int, cmyk_every: int) -> str:
    """The JPEG's colour mode: gray when ``i % gray_every == 3``, CMYK when ``i % cmyk_every == 5`` (0: never)."""
    if gray_every and i % gray_every == 3:
        return "L"
    if cmyk_every and i % cmyk_every == 5:
        return "CMYK"
    return "RGB"


def params_record(
    num_classes: int,
    images_per_class: int,
    seed: int,
    min_size: int,
    max_size: int,
    gray_every: int,
    cmyk_every: int,
    object_scale: Sequence[float] = DEFAULT_OBJECT_SCALE,
) -> dict[str, Any]:
    """The parameter record the marker stores (plain numbers, with the drawing's :data:`VERSION`).

    ``object_scale`` is recorded only when it is not the default: a default set's marker stays byte-identical to
    one written before the setting existed, and such a set still matches the default configuration.
    """
    scale = check_object_scale(object_scale)
    record: dict[str, Any] = {
        "version": VERSION,
        "num_classes": int(num_classes),
        "images_per_class": int(images_per_class),
        "seed": int(seed),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "gray_every": int(gray_every),
        "cmyk_every": int(cmyk_every),
    }
    if scale != DEFAULT_OBJECT_SCALE:
        record["object_scale"] = list(scale)
    return record


def check_object_scale(object_scale: Sequence[float]) -> tuple[float, float]:
    """``object_scale`` as (lo, hi) floats, checked: 0 < lo <= hi <= 1 (fractions of the short side)."""
    values = (
        list(object_scale) if isinstance(object_scale, Sequence) and not isinstance(object_scale, str) else []
    )
    if len(values) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ValueError(
            f"data.synthetic.object_scale must be [lo, hi], two numbers (the object's diameter as a fraction of "
            f"the image's short side), got {object_scale!r}"
        )
    lo, hi = float(values[0]), float(values[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= 1):
        raise ValueError(f"data.synthetic.object_scale must satisfy 0 < lo <= hi <= 1, got [{lo}, {hi}]")
    return lo, hi


def write_record(folder: Path, info: SyntheticInfo) -> None:
    """``boxes.json``, then the marker (last: a folder with the marker is complete)."""
    boxes = {k: list(v) for k, v in info.boxes.items()}
    (folder / BOXES).write_text(json.dumps(boxes, indent=0, sort_keys=True))
    images = info.params["num_classes"] * info.params["images_per_class"]
    meta = {"params": info.params, "class_dirs": list(info.class_dirs), "images": images}
    (folder / MARKER).write_text(json.dumps(meta, indent=2))


def load_synthetic(root: str | Path) -> SyntheticInfo | None:
    """The info of a complete synthetic set at ``root``, or ``None`` if there is none (or a partial one)."""
    root = Path(root)
    if not (root / MARKER).is_file() or not (root / BOXES).is_file():
        return None
    meta = json.loads((root / MARKER).read_text())
    boxes = {k: tuple(v) for k, v in json.loads((root / BOXES).read_text()).items()}
    return SyntheticInfo(root, tuple(meta["class_dirs"]), boxes, meta["params"])  # type: ignore[arg-type]
