"""Every Lightning callback of the project.

`GradCAMLogger` (CAM pictures and scores at validation ends), `StepTimer` (data wait vs compute), `LogitCollector`
(the logits of one evaluation pass, for evaluate's reports), `SameRunDirectory` (every rank writes one run
directory) and `PruningCallback` (Optuna pruning, for `tune`; imported on first use: it needs optuna).
"""

from typing import Any

from caltech_cam.callbacks.grad_cam import GradCAMLogger, select_probe
from caltech_cam.callbacks.logits import LogitCollector
from caltech_cam.callbacks.run_dir import SameRunDirectory
from caltech_cam.callbacks.step_timing import StepTimer

__all__ = [
    "GradCAMLogger",
    "LogitCollector",
    "PruningCallback",
    "SameRunDirectory",
    "StepTimer",
    "select_probe",
]


def __getattr__(name: str) -> Any:
    if name == "PruningCallback":
        from caltech_cam.callbacks.pruning import PruningCallback

        return PruningCallback
    raise AttributeError(f"module 'caltech_cam.callbacks' has no attribute {name!r}")
