"""Indexing a Caltech-256-layout folder: class folders, image files, and everything skipped (with the reason)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
CLASS_FOLDER = re.compile(r"^(\d+)\.(.+)$")
ARCHIVE_FOLDER = "256_ObjectCategories"
ARCHIVE_URL = "https://data.caltech.edu/records/nyy15-4j048"
# The released archive: 256 object classes + 257.clutter.
FULL_IMAGES, FULL_CLASSES = 30_607, 257
_FULL_MARKERS = ("001.ak47", "257.clutter")


class DatasetNotFoundError(FileNotFoundError):
    """The data root is missing or holds no ``NNN.name`` class folders."""


class DataNotPreparedError(RuntimeError):
    """``setup`` found no (or a stale) result of ``prepare_data``: it never redoes that work itself."""


@dataclass(frozen=True)
class ImageFile:
    """One image: its path relative to the index root (POSIX separators) and its class label."""

    path: str
    label: int


@dataclass(frozen=True)
class Skipped:
    """An entry of the root that is not used, and why."""

    path: str
    reason: str


class ClassFolders:
    """``num_classes`` and ``class_names`` of anything that has ``class_dirs`` (``NNN.name``) in label order."""

    class_dirs: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_dirs)

    @property
    def class_names(self) -> list[str]:
        """Display names without the number: ``001.ak47`` -> ``ak47``."""
        return class_names(self.class_dirs)


@dataclass(frozen=True)
class DatasetIndex(ClassFolders):
    """What a root holds. ``root`` is the folder the files' paths are relative to; ``official`` maps each path
    to ``train`` or ``test`` where the dataset ships a split (CUB-200-2011), else is None."""

    root: Path
    class_dirs: tuple[str, ...]
    files: tuple[ImageFile, ...]
    skipped: tuple[Skipped, ...]
    warnings: tuple[str, ...]
    official: dict[str, str] | None = field(default=None, compare=False)

    def abspath(self, path: str) -> Path:
        return self.root / path


def index_root(root: str | Path) -> DatasetIndex:
    """Index a Caltech-256-layout root.

    ``root`` may be the extracted ``256_ObjectCategories`` folder, its parent, or the folder torchvision's
    downloader fills (``<root>/caltech256/256_ObjectCategories``). Class folders ``NNN.name`` sorted by number
    give labels 0..K-1 (clutter, ``257.clutter``, last). Image files are recognised by extension; other files,
    hidden files and nested folders (the archive's ``198.spider/RENAME2``, ``056.dog/greg/vision309``) are
    skipped and listed with the reason.
    """
    class_root = resolve_root(root)
    class_dirs, skipped = _scan(class_root)

    files: list[ImageFile] = []
    warnings: list[str] = []
    for label, class_dir in enumerate(class_dirs):
        found = 0
        for entry in sorted((class_root / class_dir).iterdir(), key=lambda p: p.name):
            rel = f"{class_dir}/{entry.name}"
            if entry.is_dir():
                inside = sum(1 for p in entry.rglob("*") if p.is_file())
                skipped.append(
                    Skipped(rel, f"nested folder inside a class folder ({inside} file(s) not used)")
                )
            elif entry.name.startswith("."):
                skipped.append(Skipped(rel, "hidden file"))
            elif entry.suffix.lower() not in IMAGE_EXTENSIONS:
                kind = f"extension {entry.suffix}" if entry.suffix else "no extension"
                skipped.append(Skipped(rel, f"not an image file ({kind})"))
            else:
                files.append(ImageFile(rel, label))
                found += 1
        if found == 0:
            warnings.append(f"class folder {class_dir} holds no image files")

    if all(marker in class_dirs for marker in _FULL_MARKERS) and (
        len(files) != FULL_IMAGES or len(class_dirs) != FULL_CLASSES
    ):
        warnings.append(
            f"this looks like Caltech-256 but holds {len(files):,} image files in {len(class_dirs)} classes; "
            f"the released archive has {FULL_IMAGES:,} in {FULL_CLASSES} (incomplete extraction?)"
        )
    return DatasetIndex(class_root, tuple(class_dirs), tuple(files), tuple(skipped), tuple(warnings))


def list_class_dirs(root: str | Path) -> tuple[Path, tuple[str, ...]]:
    """The folder holding the class folders and their names in label order: a listing of one folder, nothing
    inside the classes is read (cheap even for Caltech-256). :class:`DatasetNotFoundError` as :func:`resolve_root`.
    """
    class_root = resolve_root(root)
    return class_root, tuple(_scan(class_root)[0])


def class_names(class_dirs: Sequence[str]) -> list[str]:
    """Display names without the number: ``001.ak47`` -> ``ak47``; a folder not named ``NNN.name`` (an image-folder
    class such as ``Mango``) is its own name."""
    return [match.group(2) if (match := CLASS_FOLDER.match(d)) else d for d in class_dirs]


def _scan(class_root: Path) -> tuple[list[str], list[Skipped]]:
    """Class folders ``NNN.name`` sorted by number (then name), and the root's other entries with the reason."""
    class_dirs: list[str] = []
    skipped: list[Skipped] = []
    for entry in sorted(class_root.iterdir(), key=lambda p: p.name):
        if entry.is_dir() and CLASS_FOLDER.match(entry.name):
            class_dirs.append(entry.name)
        elif entry.is_dir():
            skipped.append(Skipped(entry.name, "folder name is not NNN.name (not a class folder)"))
        else:
            skipped.append(Skipped(entry.name, "file outside the class folders"))
    class_dirs.sort(key=lambda d: (int(CLASS_FOLDER.match(d).group(1)), d))  # type: ignore[union-attr]
    return class_dirs, skipped


def resolve_root(root: str | Path) -> Path:
    """The folder holding the ``NNN.name`` class folders, or :class:`DatasetNotFoundError` saying how to fix it."""
    root = Path(root).expanduser().absolute()
    for candidate in (root, root / ARCHIVE_FOLDER, root / "caltech256" / ARCHIVE_FOLDER):
        if candidate.is_dir() and any(p.is_dir() and CLASS_FOLDER.match(p.name) for p in candidate.iterdir()):
            return candidate
    problem = "does not exist" if not root.exists() else "holds no NNN.name class folders"
    tars = (root / f"{ARCHIVE_FOLDER}.tar", root / "caltech256" / f"{ARCHIVE_FOLDER}.tar")
    archive = next((t for t in tars if t.is_file()), None)
    hint = (
        f"\nFound the archive {archive}: extract it with  tar -xf {archive} -C {archive.parent}"
        if archive
        else ""
    )
    raise DatasetNotFoundError(
        f"Caltech-256 not found: {root} {problem}.{hint}\n"
        "Expected layout (data.root may name either of the two top folders):\n"
        f"  {root}/{ARCHIVE_FOLDER}/001.ak47/001_0001.jpg\n"
        f"  {root}/{ARCHIVE_FOLDER}/002.american-flag/002_0001.jpg\n"
        f"  ...\n"
        f"  {root}/{ARCHIVE_FOLDER}/257.clutter/257_0001.jpg\n"
        "To get it: run with data.download=true (torchvision's downloader, md5-checked, 1.2 GB, into "
        f"{root}/caltech256/), or download {ARCHIVE_FOLDER}.tar from {ARCHIVE_URL} and extract it with "
        f" tar -xf {ARCHIVE_FOLDER}.tar -C {root}\n"
        "Or set data.root / the CALTECH256_ROOT environment variable to where it is, or use data=synthetic."
    )
