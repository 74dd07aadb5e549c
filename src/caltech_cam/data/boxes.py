"""Ground-truth object boxes of a split, read from the set's ``boxes.json`` (the synthetic set writes one).

``boxes.json`` maps a path relative to the root (``001.red-circle/001_0001.jpg``) to ``[x0, y0, x1, y1]`` in the
SAVED image's pixels, end exclusive (PIL's ``getbbox`` convention): the box is the continuous rectangle
[x0, x1) x [y0, y1), and pixel (row i, column j), whose centre is (j + 0.5, i + 0.5), is inside it exactly when
x0 <= j < x1 and y0 <= i < y1 for integer boxes. Images without an entry (clutter) have no box. Caltech-256 has no
``boxes.json``: :func:`boxes_for` returns ``None`` and callers skip localization.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

BOXES_FILE = "boxes.json"


@dataclass(frozen=True)
class ImageBoxes:
    """One box per image of a split: ``boxes`` (N, 4) float xyxy in the saved image's pixels (x1, y1 exclusive;
    a NaN row where the image has no box), ``sizes`` (N, 2) int (height, width) of the saved image, ``present``
    (N,) bool."""

    boxes: Tensor
    sizes: Tensor
    present: Tensor

    def __post_init__(self) -> None:
        n = self.boxes.shape[0] if self.boxes.ndim == 2 else -1
        if (
            self.boxes.shape != (n, 4)
            or self.sizes.shape != (n, 2)
            or self.present.shape != (n,)
            or self.present.dtype != torch.bool
            or not self.boxes.is_floating_point()
            or self.sizes.is_floating_point()
        ):
            raise ValueError(
                "ImageBoxes needs boxes float (N, 4), sizes int (N, 2) and present bool (N,), got "
                f"{self.boxes.dtype} {tuple(self.boxes.shape)}, {self.sizes.dtype} {tuple(self.sizes.shape)}, "
                f"{self.present.dtype} {tuple(self.present.shape)}"
            )

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def subset(self, indices: Sequence[int] | Tensor) -> ImageBoxes:
        """The boxes of the images at ``indices`` (in that order)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageBoxes(self.boxes[idx], self.sizes[idx], self.present[idx])


def boxes_for(root: str | Path, paths: Sequence[str | Path]) -> ImageBoxes | None:
    """The boxes of the images ``paths`` (absolute under ``root``, or relative to it), from ``root/boxes.json``.

    ``None`` when ``root`` has no ``boxes.json``. An image of ``paths`` without an entry has no box (clutter).
    Raises ``ValueError`` for a path not under ``root``, a missing image, a ``boxes.json`` entry naming no image
    under ``root`` (the file belongs to another set: then no path would match, and every image would silently
    lose its box), a malformed entry, and a box outside its image (beyond its width/height, or x0 >= x1 /
    y0 >= y1). Image sizes come from the JPEG header (PIL opens lazily), not a full decode.
    """
    root = Path(root)
    file = root / BOXES_FILE
    if not file.is_file():
        return None
    try:
        table = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(table, dict):
        raise ValueError(f"{file} must map image paths to [x0, y0, x1, y1], got a {type(table).__name__}")
    return table_boxes(root, _table_by_file(root, table, file), paths, file)


def table_boxes(
    root: Path, table: Mapping[str, object], paths: Sequence[str | Path], source: Path, slack: float = 0.0
) -> ImageBoxes:
    """The boxes of ``paths`` from ``table`` (posix path relative to ``root`` -> ``[x0, y0, x1, y1]``, end
    exclusive), checked against each image's size (read from its header). A box that overshoots its image by at
    most ``slack`` pixels is clipped to it (a dataset whose ends are inclusive pixels); any other box outside its
    image is a ValueError naming it and ``source``."""
    keys = _relative_keys(root, paths)
    n = len(keys)
    boxes = torch.full((n, 4), math.nan, dtype=torch.float64)
    sizes = torch.zeros((n, 2), dtype=torch.long)
    present = torch.zeros(n, dtype=torch.bool)
    for i, key in enumerate(keys):
        image = root / key
        if not image.is_file():
            raise ValueError(f"image {image} (listed in the split) does not exist")
        with Image.open(image) as im:
            width, height = im.size
        sizes[i] = torch.tensor([height, width])
        if key not in table:
            continue
        box = _check_box(table[key], key, width, height, source, slack)
        boxes[i] = torch.tensor(box, dtype=torch.float64)
        present[i] = True
    return ImageBoxes(boxes.float(), sizes, present)


def _table_by_file(root: Path, table: dict, file: Path) -> dict[str, object]:
    """``table`` keyed by each entry's normalized path under ``root``; every entry must name an image there."""
    resolved_root = root.resolve()
    out, strays = {}, []
    for key, box in table.items():
        full = (root / key).resolve()
        if not full.is_relative_to(resolved_root) or not full.is_file():
            strays.append(key)
            continue
        out[full.relative_to(resolved_root).as_posix()] = box
    if strays:
        raise ValueError(
            f"{file} has boxes for {len(strays)} of its {len(table)} paths that are no image under {root} "
            f"(e.g. {strays[:3]}): the boxes file does not match this set's images (paths relative to the root, "
            "like 001.name/001_0001.jpg, expected)"
        )
    return out


def _relative_keys(root: Path, paths: Sequence[str | Path]) -> list[str]:
    """``boxes.json`` keys (posix, relative to ``root``) of ``paths``; every path must lie under ``root``."""
    resolved_root = root.resolve()
    keys = []
    for p in paths:
        path = Path(p)
        full = path if path.is_absolute() else root / path
        try:
            keys.append(full.resolve().relative_to(resolved_root).as_posix())
        except ValueError:
            raise ValueError(f"image path {str(p)!r} is not under the boxes' root {str(root)!r}") from None
    return keys


def _check_box(
    entry: object, key: str, width: int, height: int, file: Path, slack: float = 0.0
) -> tuple[float, ...]:
    """The entry as 4 floats, checked to lie inside the ``width`` x ``height`` image (``slack`` px beyond it are
    clipped off) with positive extent."""
    if (
        not isinstance(entry, list | tuple)
        or len(entry) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in entry)
    ):
        raise ValueError(f"{file}: the box of {key!r} must be [x0, y0, x1, y1] (4 numbers), got {entry!r}")
    x0, y0, x1, y1 = (float(v) for v in entry)
    if x1 <= width + slack and y1 <= height + slack:
        x1, y1 = min(x1, width), min(y1, height)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
            f"{file}: the box {list(entry)} of {key!r} is outside its {width}x{height} (width x height) image "
            "or empty: expected 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height"
        )
    return x0, y0, x1, y1
