"""CUB-200-2011 (``data=cub200``): its metadata files are the index, its official split and its boxes.

``CUB_200_2011/`` holds ``images/<NNN.Class>/<file>.jpg`` and four tables keyed by image id: ``images.txt`` (id
path under ``images/``), ``image_class_labels.txt`` (id class, from 1), ``train_test_split.txt`` (id 1=train
0=test) and ``bounding_boxes.txt`` (id x y w h, float pixels). Labels are the class ids minus one; the manifest's
paths are ``images/<class>/<file>`` relative to the ``CUB_200_2011`` folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from caltech_cam.data.boxes import ImageBoxes, table_boxes
from caltech_cam.data.index import DatasetIndex, DatasetNotFoundError, ImageFile, Skipped

FOLDER = "CUB_200_2011"
TABLES = {"images.txt": 1, "image_class_labels.txt": 1, "train_test_split.txt": 1, "bounding_boxes.txt": 4}
# The boxes are whole pixels whose far edge may be the last pixel's index + 1 past the border: up to one pixel
# beyond the image is clipped, more is an error.
BOX_SLACK = 1.0


class MetadataError(ValueError):
    """A CUB metadata file is missing, malformed, or disagrees with the other files or with the images."""


@dataclass(frozen=True)
class CubMetadata:
    """The four tables joined by image id, in ``images.txt`` order: ``paths`` relative to the folder
    (``images/...``), 0-based ``labels``, ``train`` flags and boxes ``xyxy`` (end exclusive)."""

    folder: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    train: tuple[bool, ...]
    xyxy: tuple[tuple[float, float, float, float], ...]
    class_dirs: tuple[str, ...]


def cub_folder(root: str | Path) -> Path:
    """The ``CUB_200_2011`` folder: ``data.root`` itself or its child of that name."""
    root = Path(root).expanduser().absolute()
    for candidate in (root, root / FOLDER):
        if (candidate / "images.txt").is_file() or (candidate / "images").is_dir():
            return candidate
    problem = "does not exist" if not root.exists() else f"holds neither images.txt nor {FOLDER}/"
    raise DatasetNotFoundError(
        f"CUB-200-2011 not found: data.root={root} {problem}. Expected (data.root may name either top folder):\n"
        f"  {root}/{FOLDER}/images.txt, image_class_labels.txt, train_test_split.txt, bounding_boxes.txt\n"
        f"  {root}/{FOLDER}/images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg\n"
        f"Extract CUB_200_2011.tgz (https://data.caltech.edu/records/65de6-vp158) with  tar -xzf CUB_200_2011.tgz"
    )


def read_metadata(root: str | Path) -> CubMetadata:
    """The four tables, checked: every file present, every line ``id value...``, the same ids in all four, one
    class folder per class id and ids 1..K, flags 0/1, boxes of positive size. A :class:`MetadataError` names the
    file (and line) that is wrong."""
    folder = cub_folder(root)
    missing = [name for name in TABLES if not (folder / name).is_file()]
    if missing:
        raise MetadataError(
            f"CUB-200-2011 at {folder}: missing {missing}; CUB_200_2011.tgz holds all of {list(TABLES)}"
        )
    tables = {name: _read_table(folder / name, width) for name, width in TABLES.items()}
    ids = list(tables["images.txt"])
    for name, table in tables.items():
        if table.keys() != set(ids):
            extra = sorted(set(table) - set(ids), key=int)[:5]
            lacking = sorted(set(ids) - set(table), key=int)[:5]
            raise MetadataError(
                f"{folder / name} disagrees with images.txt: ids {lacking} missing, ids {extra} not in images.txt"
            )
    paths = [tables["images.txt"][i][0] for i in ids]
    classes = [
        _int(tables["image_class_labels.txt"][i][0], folder / "image_class_labels.txt", i) for i in ids
    ]
    folder_of: dict[int, set[str]] = {}
    for path, cls in zip(paths, classes, strict=True):
        folder_of.setdefault(cls, set()).add(path.split("/")[0])
    if sorted(folder_of) != list(range(1, len(folder_of) + 1)):
        raise MetadataError(
            f"{folder / 'image_class_labels.txt'}: class ids must be 1..K, got {sorted(folder_of)}"
        )
    mixed = {cls: sorted(dirs) for cls, dirs in folder_of.items() if len(dirs) > 1}
    if mixed or len({next(iter(d)) for d in folder_of.values()}) != len(folder_of):
        raise MetadataError(
            f"{folder / 'image_class_labels.txt'} disagrees with the class folders of images.txt: each class id "
            f"needs its own folder (class ids with several: {mixed or 'none'}; or one folder for several ids)"
        )
    if len(folder_of) < 2:
        raise MetadataError(f"CUB-200-2011 at {folder} lists {len(folder_of)} class; a classifier needs two")
    flags = [tables["train_test_split.txt"][i][0] for i in ids]
    if bad := sorted({f for f in flags if f not in ("0", "1")}):
        raise MetadataError(
            f"{folder / 'train_test_split.txt'}: flags must be 1 (train) or 0 (test), got {bad}"
        )
    return CubMetadata(
        folder,
        tuple(f"images/{p}" for p in paths),
        tuple(c - 1 for c in classes),
        tuple(f == "1" for f in flags),
        tuple(_xyxy(tables["bounding_boxes.txt"][i], folder / "bounding_boxes.txt", i) for i in ids),
        tuple(next(iter(folder_of[c])) for c in sorted(folder_of)),
    )


def cub_classes(root: str | Path) -> tuple[str, ...]:
    """The class folders in label order, from the metadata alone (no image is opened)."""
    return read_metadata(root).class_dirs


def index_cub(root: str | Path) -> DatasetIndex:
    """Every image ``images.txt`` lists (each must exist: a missing one is a :class:`MetadataError`), with the
    official split; files under ``images/`` that it does not list are skipped with the reason."""
    meta = read_metadata(root)
    absent = [p for p in meta.paths if not (meta.folder / p).is_file()]
    if absent:
        raise MetadataError(
            f"{meta.folder / 'images.txt'} lists {len(absent)} image(s) not found under {meta.folder}: {absent[:5]}"
        )
    listed = set(meta.paths)
    skipped = [
        Skipped(rel, "not listed in images.txt")
        for rel in _files_under(meta.folder, "images")
        if rel not in listed and not Path(rel).name.startswith(".")
    ]
    files = tuple(ImageFile(p, y) for p, y in zip(meta.paths, meta.labels, strict=True))
    official = {p: "train" if t else "test" for p, t in zip(meta.paths, meta.train, strict=True)}
    return DatasetIndex(meta.folder, meta.class_dirs, files, tuple(skipped), (), official=official)


def cub_boxes(folder: Path, paths: Sequence[str | Path]) -> ImageBoxes:
    """The box of every image of ``paths`` from ``bounding_boxes.txt``, as xyxy (x, y, x + w, y + h)."""
    meta = read_metadata(folder)
    table = dict(zip(meta.paths, (list(b) for b in meta.xyxy), strict=True))
    return table_boxes(meta.folder, table, paths, meta.folder / "bounding_boxes.txt", slack=BOX_SLACK)


def _read_table(path: Path, width: int) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        values = line.split()
        if len(values) != 1 + width:
            raise MetadataError(f"{path}:{line_no}: expected an id and {width} value(s), got {line!r}")
        if values[0] in table:
            raise MetadataError(f"{path}:{line_no}: id {values[0]} is listed twice")
        table[values[0]] = values[1:]
    return table


def _int(value: str, path: Path, image_id: str) -> int:
    if not value.isdigit():
        raise MetadataError(f"{path}: image {image_id} has class {value!r}, not a positive integer")
    return int(value)


def _xyxy(values: list[str], path: Path, image_id: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in values)
    except ValueError:
        raise MetadataError(f"{path}: image {image_id} has box {values}, not 4 numbers") from None
    if not (x >= 0 and y >= 0 and w > 0 and h > 0):
        raise MetadataError(
            f"{path}: image {image_id} has box x y w h = {values}: need x, y >= 0 and w, h > 0"
        )
    return x, y, x + w, y + h


def _files_under(folder: Path, sub: str) -> list[str]:
    return sorted(
        (Path(d) / n).relative_to(folder).as_posix()
        for d, _, names in os.walk(folder / sub, followlinks=True)
        for n in names
    )
