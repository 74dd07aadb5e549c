"""`LogitCollector`: the logits and labels of one test/validation pass, for reports from that same pass."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from caltech_cam.models.outputs import logits_of


class LogitCollector(L.Callback):
    """Keeps the logits and labels of every test/validation batch (one forward hook on `pl_module.model`), so
    the reports come from the same pass as `trainer.test`'s numbers instead of a second run over the split."""

    def __init__(self) -> None:
        self.logits: list[Tensor] = []
        self.labels: list[Tensor] = []
        self._last: Tensor | None = None
        self._handle: Any = None

    def _keep(self, module: object, args: object, output: object) -> None:
        self._last = logits_of(output).detach().float().cpu()

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.logits, self.labels = [], []
        self._handle = pl_module.model.register_forward_hook(self._keep)

    def _batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._last is None:
            raise RuntimeError("LogitCollector: a test/val batch ended without a forward of pl_module.model")
        self.logits.append(self._last)
        self.labels.append(batch[1].detach().cpu())
        self._last = None

    def _end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    on_test_start = on_validation_start = _start
    on_test_batch_end = on_validation_batch_end = _batch_end
    on_test_end = on_validation_end = _end

    def collected(self) -> tuple[Tensor, Tensor]:
        """(logits (N, C), labels (N,)) of the pass, in batch order."""
        return torch.cat(self.logits), torch.cat(self.labels).long()
