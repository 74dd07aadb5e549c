"""Grad-CAM and relatives for every layer in one pass, their rendering and their faithfulness metrics."""

from caltech_cam.cam.engine import (
    Capture,
    cams_from_capture,
    capture,
    compute_cams,
    get_method,
    minmax,
    postprocess,
)
from caltech_cam.cam.methods import METHODS, Method, register
from caltech_cam.cam.metrics import (
    average_drop,
    confidence_change,
    deletion_auc,
    increase_in_confidence,
    insertion_auc,
    target_probabilities,
)
from caltech_cam.cam.render import captioned_grid, colormap_lut, make_grid, overlay, save_png

__all__ = [
    "METHODS",
    "Capture",
    "Method",
    "average_drop",
    "cams_from_capture",
    "captioned_grid",
    "capture",
    "colormap_lut",
    "compute_cams",
    "confidence_change",
    "deletion_auc",
    "get_method",
    "increase_in_confidence",
    "insertion_auc",
    "make_grid",
    "minmax",
    "overlay",
    "postprocess",
    "register",
    "save_png",
    "target_probabilities",
]
