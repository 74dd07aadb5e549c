"""`SameRunDirectory`: every rank of a run writes into one run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from caltech_cam.run.launch import LaunchError


class SameRunDirectory(L.Callback):
    """Every rank must write into one run directory: on several nodes, Hydra's default `${now}` can differ.

    Checked when the run starts (all ranks take part in one `all_gather_object`, so all of them stop together).
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = str(Path(output_dir).resolve())

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return
        seen: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(seen, self.output_dir)
        if len(set(seen)) > 1:
            listing = ", ".join(f"rank {r}: {d}" for r, d in enumerate(seen))
            raise LaunchError(
                f"the ranks of this run write into different run directories ({listing}). Pass the same "
                "hydra.run.dir=<shared folder> on every node (Hydra's default uses the start time, ${now:...})."
            )
