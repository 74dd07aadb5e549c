"""Deprecated: `caltech_cam.models.classifier` and `caltech_cam.models.checkpoints` (moved in 0.3.0).

Kept for one release so that code, notebooks and run directories of 0.2.0 (`_target_:
caltech_cam.module.ClassifierModule`) keep working; it will be removed in 0.4.0.
"""

import warnings

from caltech_cam.models.checkpoints import load_classifier, upgrade_hparams
from caltech_cam.models.classifier import ClassifierModule

warnings.warn(
    "caltech_cam.module is deprecated since 0.3.0 and will be removed in 0.4.0: import ClassifierModule from "
    "caltech_cam.models.classifier and load_classifier from caltech_cam.models.checkpoints (both also from "
    "caltech_cam.models).",
    FutureWarning,
    stacklevel=2,
)

__all__ = ["ClassifierModule", "load_classifier", "upgrade_hparams"]
