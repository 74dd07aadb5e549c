"""A GradCAMLogger that leaves a file per computation, so a test in another process can see which rank worked."""

from __future__ import annotations

from pathlib import Path

from caltech_cam.callbacks import GradCAMLogger


class RecordingGradCAMLogger(GradCAMLogger):
    def __init__(self, record_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.record_dir = record_dir

    def _log(self, trainer, pl_module, writer) -> None:
        Path(self.record_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.record_dir) / f"rank{trainer.global_rank}-step{trainer.global_step}").touch()
        super()._log(trainer, pl_module, writer)
