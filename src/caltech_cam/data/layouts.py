"""The dataset layouts ``data.layout`` names: where a layout's files are, how they are indexed, and their boxes.

A layout is five functions of ``data.root``; the datamodule asks the one it is configured with and nothing else
about the folder's shape. Manifest paths are relative to :attr:`Layout.resolve`'s folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from caltech_cam.data.boxes import ImageBoxes, boxes_for
from caltech_cam.data.cub import cub_boxes, cub_classes, cub_folder, index_cub
from caltech_cam.data.imagefolder import imagefolder_classes, imagefolder_root, index_imagefolder
from caltech_cam.data.index import DatasetIndex, index_root, list_class_dirs, resolve_root


@dataclass(frozen=True)
class Layout:
    """``resolve(root)``: the folder the manifest's paths are relative to; ``classes(root)``: the class folders in
    label order, cheaply (nothing decoded or written); ``index(root)``: every file with its label;
    ``boxes(folder, paths)``: the boxes of ``paths`` under the resolved folder, or None; ``official``: whether the
    index carries an official train/test split (``data.split.mode=official``); ``download``: whether
    ``data.download=true`` can fetch it."""

    name: str
    resolve: Callable[[str | Path], Path]
    classes: Callable[[str | Path], tuple[str, ...]]
    index: Callable[[str | Path], DatasetIndex]
    boxes: Callable[[Path, Sequence[str | Path]], ImageBoxes | None] = boxes_for
    official: bool = False
    download: bool = False


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise ValueError(f"layout {layout.name!r} is registered twice")
    LAYOUTS[layout.name] = layout
    return layout


def get_layout(name: str) -> Layout:
    """The registered layout, or a ValueError listing them."""
    if name not in LAYOUTS:
        raise ValueError(f"data.layout={name!r} is not a layout; expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[name]


def _caltech_classes(root: str | Path) -> tuple[str, ...]:
    return list_class_dirs(root)[1]


register_layout(
    Layout("caltech256", resolve=resolve_root, classes=_caltech_classes, index=index_root, download=True)
)
register_layout(
    Layout("imagefolder", resolve=imagefolder_root, classes=imagefolder_classes, index=index_imagefolder)
)
register_layout(
    Layout("cub200", resolve=cub_folder, classes=cub_classes, index=index_cub, boxes=cub_boxes, official=True)
)
