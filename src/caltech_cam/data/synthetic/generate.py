"""Generating a synthetic set (draw every picture into a staging folder, record it, install it) and its plan."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caltech_cam.data.synthetic.draw import DEFAULT_OBJECT_SCALE, OBJECT_SPECS, Box, render_image
from caltech_cam.data.synthetic.install import check_target, install, staging
from caltech_cam.data.synthetic.record import (
    SyntheticInfo,
    check_object_scale,
    class_dirs,
    image_file,
    image_mode,
    load_synthetic,
    params_record,
    write_record,
)


def generate_synthetic(
    root: str | Path,
    num_classes: int = 10,
    images_per_class: int = 200,
    seed: int = 0,
    min_size: int = 64,
    max_size: int = 160,
    gray_every: int = 50,
    cmyk_every: int = 50,
    object_scale: Sequence[float] = DEFAULT_OBJECT_SCALE,
) -> SyntheticInfo:
    """Write ``num_classes`` folders (the last one clutter) of ``images_per_class`` JPEGs each into ``root``.

    Image sides are drawn uniformly from [min_size, max_size], and the object's diameter as a fraction of the
    short side from ``object_scale`` = [lo, hi] (0 < lo <= hi <= 1; the default [0.4, 0.8] draws the pinned
    bytes and is left out of the marker, so sets made before the setting existed still match). Image number i of
    a class is saved as a grayscale JPEG when ``i % gray_every == 3`` and as CMYK when ``i % cmyk_every == 5``
    (0 disables).
    Files are written into a temporary sibling folder, then renamed: ``root`` is never half-written, and
    ``synthetic.json`` (written last) records the parameters. An existing ``root`` is replaced only when it
    is a synthetic set (it has the marker, or holds nothing but synthetic class folders and generator files,
    as a partial set would); anything else there is an error, never deleted.
    """
    dirs = class_dirs(num_classes)
    if images_per_class < 1 or not 8 <= min_size <= max_size:
        raise ValueError(
            f"need images_per_class >= 1 and 8 <= min_size <= max_size, got {images_per_class}, {min_size}, {max_size}"
        )
    params = params_record(
        num_classes, images_per_class, seed, min_size, max_size, gray_every, cmyk_every, object_scale
    )
    scale = check_object_scale(object_scale)
    root = Path(root)
    check_target(root)  # before minutes of drawing, not after
    boxes: dict[str, Box] = {}
    with staging(root) as tmp:
        for c, class_dir in enumerate(dirs):
            (tmp / class_dir).mkdir()
            spec = OBJECT_SPECS[c] if c < num_classes - 1 else None
            for i in range(images_per_class):
                rel = image_file(class_dir, c, i)
                image, box = render_image(
                    spec, np.random.default_rng([seed, c, i]), min_size, max_size, scale
                )
                image.convert(image_mode(i, gray_every, cmyk_every)).save(tmp / rel, "JPEG", quality=90)
                if box is not None:
                    boxes[rel] = box
        info = SyntheticInfo(root, tuple(dirs), boxes, params)
        write_record(tmp, info)
        install(tmp, root, params)
    return info


def ensure_synthetic(root: str | Path, **params: Any) -> SyntheticInfo:
    """The synthetic set at ``root``, generated with ``params`` if there is none (or only a partial one).

    A complete set is used as it is, whatever parameters it was made with (``info.params`` says which):
    pointing ``data.root`` at an existing set must never rewrite it. Delete the folder to regenerate.
    """
    existing = load_synthetic(root)
    return existing if existing is not None else generate_synthetic(root, **params)


def requested_params(**params: Any) -> dict[str, Any]:
    """The full parameter record (defaults filled in) that :func:`generate_synthetic` would write."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(generate_synthetic).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return params_record(**{**defaults, **params})


def planned_class_dirs(root: str | Path, **params: Any) -> tuple[str, ...]:
    """The class folders :func:`ensure_synthetic` ``(root, **params)`` would give, without writing anything.

    An existing complete set's own folders (it is used as it is); otherwise those ``params`` generate. A ``root``
    holding something else is refused here already, with what :func:`generate_synthetic` would say.
    """
    existing = load_synthetic(root)
    if existing is not None:
        return existing.class_dirs
    check_target(Path(root))
    return tuple(class_dirs(requested_params(**params)["num_classes"]))
