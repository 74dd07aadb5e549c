"""Any class-folder tree, read exactly as torchvision's ``ImageFolder`` reads it (``data=imagefolder``).

Classes are the sub-folders of the root sorted by name (case-sensitive: ``Mango < apple < kiwi``), labels their
positions (ImageFolder's ``class_to_idx``); files are found recursively (symbolic links followed) and kept when
their name ends, in any case, with one of ImageFolder's extensions; per class in sorted ``os.walk`` order. The
manifest's paths are relative to ``data.root`` (POSIX).
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from caltech_cam.data.index import DatasetIndex, DatasetNotFoundError, ImageFile, Skipped

EXTENSIONS = tuple(IMG_EXTENSIONS)


def imagefolder_root(root: str | Path) -> Path:
    """``data.root`` itself (absolute), or :class:`DatasetNotFoundError` when it is no folder."""
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        problem = "does not exist" if not path.exists() else "is not a folder"
        raise DatasetNotFoundError(
            f"data=imagefolder: data.root={path} {problem}. Expected <data.root>/<class>/<image> "
            f"(any depth below the class folder; extensions {', '.join(EXTENSIONS)})."
        )
    return path


def imagefolder_classes(root: str | Path) -> tuple[str, ...]:
    """The class folders in label order (one listing of the root); fewer than two is an error naming the root."""
    path = imagefolder_root(root)
    classes = sorted(entry.name for entry in os.scandir(path) if entry.is_dir())
    if len(classes) < 2:
        raise DatasetNotFoundError(
            f"data=imagefolder: data.root={path} holds {len(classes)} class folder(s) "
            f"{classes}; a classifier needs at least two: <data.root>/<class>/<image>."
        )
    return tuple(classes)


def index_imagefolder(root: str | Path) -> DatasetIndex:
    """Every image file of the tree with its label, the other entries as skipped (with the reason).

    A class folder without one image file is an error naming it (ImageFolder refuses it too); a hidden class
    folder (``.ipynb_checkpoints``) is a class, as ImageFolder counts it, with a warning.
    """
    path = imagefolder_root(root)
    classes = imagefolder_classes(path)
    skipped = [
        Skipped(entry.name, "file outside the class folders")
        for entry in sorted(os.scandir(path), key=lambda e: e.name)
        if not entry.is_dir()
    ]
    files: list[ImageFile] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        found = 0
        for folder, _, names in sorted(os.walk(path / name, followlinks=True)):
            for file_name in sorted(names):
                rel = (Path(folder) / file_name).relative_to(path).as_posix()
                if file_name.lower().endswith(EXTENSIONS):
                    files.append(ImageFile(rel, label))
                    found += 1
                else:
                    skipped.append(Skipped(rel, "not an image file (not one of ImageFolder's extensions)"))
        if found == 0:
            empty.append(name)
    if empty:
        raise DatasetNotFoundError(
            f"data=imagefolder: class folder(s) {empty} under {path} hold no image file "
            f"(extensions {', '.join(EXTENSIONS)}); remove them or add images."
        )
    warnings = [
        f"class folder {name} is hidden but counts as a class (as in ImageFolder); remove it if it is not one"
        for name in classes
        if name.startswith(".")
    ]
    return DatasetIndex(path, classes, tuple(files), tuple(skipped), tuple(warnings))
