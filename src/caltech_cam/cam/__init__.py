"""Grad-CAM and relatives for every layer in one pass, their rendering, their faithfulness, and the explainer."""

from caltech_cam.cam.engine import (
    Capture,
    cams_from_capture,
    capture,
    check_layers,
    compute_cams,
    minmax,
    postprocess,
)
from caltech_cam.cam.explainer import Explainable, Explainer, Explanation, require_explainable
from caltech_cam.cam.methods import ALIASES, METHODS, Method, get_method, register
from caltech_cam.cam.metrics import (
    average_drop,
    confidence_change,
    deletion_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_auc,
    insertion_curve,
    target_probabilities,
)
from caltech_cam.cam.render import colormap_lut, make_grid, overlay, save_png, to_pil

__all__ = [
    "ALIASES",
    "METHODS",
    "Capture",
    "Explainable",
    "Explainer",
    "Explanation",
    "Method",
    "average_drop",
    "cams_from_capture",
    "capture",
    "check_layers",
    "colormap_lut",
    "compute_cams",
    "confidence_change",
    "deletion_auc",
    "deletion_curve",
    "get_method",
    "increase_in_confidence",
    "insertion_auc",
    "insertion_curve",
    "make_grid",
    "minmax",
    "overlay",
    "postprocess",
    "register",
    "require_explainable",
    "save_png",
    "target_probabilities",
    "to_pil",
]
