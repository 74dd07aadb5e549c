"""Lightning callbacks."""

from caltech_cam.callbacks.grad_cam import GradCAMLogger, select_probe
from caltech_cam.callbacks.step_timing import StepTimer

__all__ = ["GradCAMLogger", "StepTimer", "select_probe"]
