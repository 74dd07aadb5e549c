"""The synthetic generator's bytes are pinned: the same seed must give the same files, release after release.

The digests were recorded from the generator before it was split into draw/record/install (commit "Pin the
synthetic generator's bytes"). A change here means every existing split manifest (it stores sha1s) and every
published number on the synthetic set silently changes too. JPEG bytes also depend on Pillow's libjpeg: the
digests were taken with Pillow 13.0.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from caltech_cam.data import generate_synthetic


def _digest(root: Path) -> tuple[int, str]:
    """sha1 over (relative path, NUL, bytes) of every file in sorted path order, and the file count."""
    digest = hashlib.sha1()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return len(files), digest.hexdigest()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # Every object class (12 specs, every shape and texture) + clutter; 13 x 3 JPEGs + boxes + marker.
        (
            {"num_classes": 13, "images_per_class": 3, "seed": 0},
            (41, "7afcecb11bc22a970bfd4480d522d0c0c05b6090"),
        ),
        # Image numbers 3 and 5 of each class: the grayscale and the CMYK JPEG.
        (
            {"num_classes": 2, "images_per_class": 6, "seed": 3, "min_size": 40, "max_size": 56},
            (14, "639a4f12a442a6fd68fb2ed06450ba847e51b6b3"),
        ),
    ],
)
def test_the_generator_writes_the_pinned_bytes(tmp_path, params, expected):
    generate_synthetic(tmp_path / "s", **params)
    assert _digest(tmp_path / "s") == expected
