"""`GradCAMLogger`: Grad-CAM of every network stage in TensorBoard at each validation end, rank 0 only."""

from __future__ import annotations

import itertools
import logging
import traceback
from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from caltech_cam.cam import (
    METHODS,
    cams_from_capture,
    captioned_grid,
    capture,
    confidence_change,
    get_method,
    overlay,
)

log = logging.getLogger(__name__)


def select_probe(labels: Sequence[int], num_images: int) -> list[int]:
    """Indices of a fixed probe set: classes spread evenly over the sorted labels present (first and last —
    Caltech's clutter — included), the first image of each in dataset order; round-robin when there are fewer
    classes than images. No randomness: the same images every epoch and in every run on the same split."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}.")
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    classes = sorted(by_class)
    if not classes:
        raise ValueError("The validation split is empty: no probe images to explain.")
    if len(classes) >= num_images:
        step = (len(classes) - 1) / max(num_images - 1, 1)
        chosen = [classes[round(i * step)] for i in range(num_images)] if num_images > 1 else [classes[0]]
        return [by_class[c][0] for c in chosen]
    deepest = max(len(v) for v in by_class.values())
    rounds = (by_class[c][depth] for depth in range(deepest) for c in classes if depth < len(by_class[c]))
    return list(itertools.islice(rounds, num_images))


class GradCAMLogger(L.Callback):
    """Logs, at every N-th validation end (sanity check skipped), on global rank 0 only:

    - `gradcam/<layer>`: the probe images with that layer's overlay, captioned true / predicted class;
    - `gradcam/overview`: rows = images, columns = input then each layer (the study's figure of ResNet stages);
    - `gradcam/average_drop/<layer>` and `gradcam/increase_in_confidence/<layer>`: faithfulness on the probe.

    Other ranks return at once (no collectives inside, so no rank waits on another). The maps come from one engine
    call on the unwrapped `pl_module.model`, which leaves weights, `.grad`, BatchNorm statistics, RNG and module
    modes untouched. An exception is logged once as a warning and training continues, unless `strict`.
    """

    def __init__(
        self,
        num_images: int = 16,
        layers: Sequence[str] | None = None,
        method: str = "gradcam",
        every_n_epochs: int = 1,
        colormap: str = "jet",
        alpha: float = 0.5,
        faithfulness: bool = True,
        strict: bool = False,
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        # A wrong method name fails at construction, not epochs later.
        if method not in METHODS:
            raise ValueError(f"Unknown CAM method {method!r}; expected one of {sorted(METHODS)}.")
        self.num_images = num_images
        self.layers = list(layers) if layers else None
        self.method = method
        self.every_n_epochs = every_n_epochs
        self.colormap = colormap
        self.alpha = alpha
        self.faithfulness = faithfulness
        self.strict = strict
        self._probe: tuple[Tensor, Tensor] | None = None
        self._warned = False

    # ------------------------------------------------------------------------------------------------- probe
    def _probe_on(self, trainer: L.Trainer, device: torch.device) -> tuple[Tensor, Tensor]:
        """The probe batch (normalized images, labels), built once and kept on the model's device."""
        if self._probe is None or self._probe[0].device != device:
            dataset = getattr(trainer.datamodule, "val_dataset", None) if trainer.datamodule else None
            if dataset is None:
                raise RuntimeError("GradCAMLogger needs a datamodule with a `val_dataset` (labels + images).")
            indices = select_probe(dataset.labels, self.num_images)
            items = [dataset[i] for i in indices]
            images = torch.stack([image for image, _ in items]).to(device)
            labels = torch.tensor([label for _, label in items], device=device)
            self._probe = (images, labels)
        return self._probe

    # ------------------------------------------------------------------------------------------------- hooks
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        writer = self._writer(trainer)
        if writer is None:
            return
        try:
            self._log(trainer, pl_module, writer)
        except Exception:
            if self.strict:
                raise
            if not self._warned:
                log.warning(
                    "GradCAMLogger failed; training continues without CAMs.\n%s", traceback.format_exc()
                )
                self._warned = True

    def _writer(self, trainer: L.Trainer):
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        if not self._warned:
            log.warning("GradCAMLogger: no TensorBoardLogger among the trainer's loggers; nothing is logged.")
            self._warned = True
        return None

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, writer) -> None:
        images, labels = self._probe_on(trainer, pl_module.device)
        layers = self.layers or list(pl_module.cam_layers)
        method = get_method(self.method)
        # One engine pass for every layer; its targets are the predicted classes, which the captions show.
        seen = capture(pl_module.model, images, layers, gradients=method.uses_gradients)
        maps = cams_from_capture(seen, method, (images.shape[-2], images.shape[-1]))
        names = pl_module.class_names
        captions = [
            f"true: {names[t]} / pred: {names[p]}"
            for t, p in zip(labels.tolist(), seen.targets.tolist(), strict=True)
        ]
        shown = pl_module.preset.denormalize(images)
        step = trainer.global_step
        overlaid = {
            layer: overlay(shown, maps[layer], cmap=self.colormap, alpha=self.alpha) for layer in layers
        }
        style = {"captions": captions, "overlaid": overlaid}
        for layer in layers:
            grid = captioned_grid(shown, {layer: maps[layer]}, **style)
            writer.add_image(f"gradcam/{layer}", grid, step, dataformats="CHW")
        grid = captioned_grid(shown, maps, **style)
        writer.add_image("gradcam/overview", grid, step, dataformats="CHW")
        if self.faithfulness:
            scores = confidence_change(pl_module.model, images, maps, seen.targets, logits=seen.logits)
            for layer, values in scores.items():
                writer.add_scalar(f"gradcam/average_drop/{layer}", float(values["average_drop"]), step)
                writer.add_scalar(
                    f"gradcam/increase_in_confidence/{layer}", float(values["increase_in_confidence"]), step
                )
        writer.flush()
