"""Lightning callbacks."""

from caltech_cam.callbacks.grad_cam import GradCAMLogger, select_probe

__all__ = ["GradCAMLogger", "select_probe"]
