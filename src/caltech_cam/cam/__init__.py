"""Grad-CAM and relatives for every layer in one pass, their rendering, the explainer, and the scores of their maps
(localization on boxes, faithfulness, ROAD, the randomization sanity check)."""

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
from caltech_cam.cam.localization import (
    BASELINES,
    box_masks,
    centre_baseline,
    default_tolerance,
    energy_pointing_game,
    localization_scores,
    map_boxes,
    pointing_game,
    relevance_mass,
    relevance_rank,
    uniform_baseline,
)
from caltech_cam.cam.methods import ALIASES, METHODS, Method, get_method, register
from caltech_cam.cam.metric_registry import METRICS, MapBatch, register_metric
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
from caltech_cam.cam.road import ROAD_FRACTIONS, noisy_linear_impute, road_curve, road_scores
from caltech_cam.cam.sanity import SANITY_THRESHOLD, cascading_randomization, sanity_summary, spearman
from caltech_cam.cam.scoring import CamScores, bootstrap_ci, score_cams

__all__ = [
    "ALIASES",
    "BASELINES",
    "METHODS",
    "METRICS",
    "ROAD_FRACTIONS",
    "SANITY_THRESHOLD",
    "CamScores",
    "Capture",
    "Explainable",
    "Explainer",
    "Explanation",
    "MapBatch",
    "Method",
    "average_drop",
    "bootstrap_ci",
    "box_masks",
    "cams_from_capture",
    "capture",
    "cascading_randomization",
    "centre_baseline",
    "check_layers",
    "colormap_lut",
    "compute_cams",
    "confidence_change",
    "default_tolerance",
    "deletion_auc",
    "deletion_curve",
    "energy_pointing_game",
    "get_method",
    "increase_in_confidence",
    "insertion_auc",
    "insertion_curve",
    "localization_scores",
    "make_grid",
    "map_boxes",
    "minmax",
    "noisy_linear_impute",
    "overlay",
    "pointing_game",
    "postprocess",
    "register",
    "register_metric",
    "relevance_mass",
    "relevance_rank",
    "require_explainable",
    "road_curve",
    "road_scores",
    "sanity_summary",
    "save_png",
    "score_cams",
    "spearman",
    "target_probabilities",
    "to_pil",
    "uniform_baseline",
]
