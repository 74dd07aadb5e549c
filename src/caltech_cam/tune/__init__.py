"""Optuna sweeps over the Hydra train config: `python -m caltech_cam.tune` (see `study`)."""

from caltech_cam.callbacks.pruning import PruningCallback
from caltech_cam.tune.results import BEST_GROUP, BEST_NAME, best_yaml, reuse_command, write_results
from caltech_cam.tune.space import Param, check_space, parse_space
from caltech_cam.tune.storage import open_storage
from caltech_cam.tune.study import run_study, train_overrides_of

__all__ = [
    "BEST_GROUP",
    "BEST_NAME",
    "Param",
    "PruningCallback",
    "best_yaml",
    "check_space",
    "open_storage",
    "parse_space",
    "reuse_command",
    "run_study",
    "train_overrides_of",
    "write_results",
]
