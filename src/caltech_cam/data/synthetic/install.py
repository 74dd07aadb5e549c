"""Putting a synthetic set into place race-safely: build it in a temporary sibling folder, then rename it.

``root`` is never half-written, two processes generating at once both end with one complete set, and a folder
that is not a synthetic set is never deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from caltech_cam.data.index import DatasetNotFoundError, list_class_dirs
from caltech_cam.data.synthetic.record import BOXES, MARKER, all_class_dirs, load_synthetic


@contextmanager
def staging(root: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``root`` (same file system, so the rename is atomic), removed on exit."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install(staged: Path, root: Path, params: dict[str, int]) -> None:
    """Rename the complete set ``staged`` to ``root``, replacing a synthetic set there (never anything else)."""
    existing = load_synthetic(root)
    if existing is not None and existing.params == params:
        return  # another process just wrote the same bytes: keep its copy, it may already be in use
    if root.exists():
        check_target(root)
        shutil.rmtree(root)
    try:
        os.rename(staged, root)
    except OSError:
        # Another process renamed the same set into place first (its marker is complete): keep theirs.
        if load_synthetic(root) is None:
            raise


def looks_synthetic(root: Path) -> bool:
    """A set with the marker, or a partial one: only synthetic class folders (never Caltech's names) and
    ``boxes.json``, as a writer that died before its last file leaves it."""
    if (root / MARKER).is_file():
        return True
    ours = all_class_dirs()
    return all(p.name == BOXES or (p.is_dir() and p.name in ours) for p in root.iterdir())


def check_target(root: Path) -> None:
    """Refuse a ``root`` that exists and is not a synthetic set, saying what it is when it is a Caltech layout."""
    if not root.exists() or looks_synthetic(root):
        return
    message = f"{root} exists and is not a synthetic dataset written by caltech_cam"
    try:
        class_root, folders = list_class_dirs(root)
    except DatasetNotFoundError:
        raise FileExistsError(f"{message}; remove it or point data.root elsewhere") from None
    where = "" if class_root == root.absolute() else f" in {class_root}"
    raise FileExistsError(
        f"{message}: it holds Caltech-layout class folders{where} ({len(folders)} NNN.name folders, e.g. "
        f"{', '.join(folders[:3])}). data=synthetic (the default) only generates its own set. "
        f"To use these folders, pass data=caltech256 data.root={root}"
    )
