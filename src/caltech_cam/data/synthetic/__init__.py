"""A small synthetic dataset in exactly the Caltech-256 layout, with ground-truth boxes: the embedded default.

Each object class is one shape in one saturated colour with one fill texture (:mod:`.draw`) on a cluttered
background; the last class, ``NNN.clutter``, is background only, like Caltech's ``257.clutter``. A few files are
saved as grayscale or CMYK JPEGs, as in the real archive. Every file is a function of (seed, class, image number)
only, so a seed gives byte-identical files. :mod:`.record` is the on-disk record, :mod:`.install` the race-safe
placement, and :mod:`.generate` composes them.
"""

from caltech_cam.data.synthetic.draw import OBJECT_SPECS, SHAPES, TEXTURES, ObjectSpec, render_image
from caltech_cam.data.synthetic.generate import (
    ensure_synthetic,
    generate_synthetic,
    planned_class_dirs,
    requested_params,
)
from caltech_cam.data.synthetic.record import BOXES, MARKER, MAX_CLASSES, SyntheticInfo, load_synthetic

__all__ = [
    "BOXES",
    "MARKER",
    "MAX_CLASSES",
    "OBJECT_SPECS",
    "SHAPES",
    "TEXTURES",
    "ObjectSpec",
    "SyntheticInfo",
    "ensure_synthetic",
    "generate_synthetic",
    "load_synthetic",
    "planned_class_dirs",
    "render_image",
    "requested_params",
]
