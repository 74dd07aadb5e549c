"""`GradCAMLogger`: Grad-CAM of every network stage in TensorBoard at each validation end, rank 0 only."""

from __future__ import annotations

import itertools
import logging
import traceback
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from caltech_cam.cam import Explainer, colormap_lut, get_method, require_explainable

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

    The module must be `caltech_cam.cam.Explainable` (`.model`, `.cam_layers`, `.class_names`, `.preset`).
    Configuration is checked in `setup`, before the first epoch and whatever `strict` says: the module, layer
    names, method (any alias of `methods.get_method`), and the datamodule's `val_dataset`; a missing
    TensorBoardLogger is warned about there once, and then nothing is logged. Other ranks return at once (no
    collectives inside, so no rank waits on another). The maps come from one `Explainer` pass on the unwrapped
    `pl_module.model`, which leaves weights, `.grad`, BatchNorm statistics, RNG and module modes untouched. An
    exception while logging is warned about once and training continues, unless `strict`.
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
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}.")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        colormap_lut(colormap)
        self.num_images = num_images
        self.layers = list(layers) if layers else None
        self.method = get_method(method).name  # canonical: `gradcam++` is stored as `gradcampp`
        self.every_n_epochs = every_n_epochs
        self.colormap = colormap
        self.alpha = alpha
        self.faithfulness = faithfulness
        self.strict = strict
        self._explainer: Explainer | None = None
        self._probe: tuple[Tensor, Tensor] | None = None
        self._failure_warned = False
        self._no_logger_warned = False

    # ------------------------------------------------------------------------------------------------- checks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fail on a misconfiguration now, not at the first validation end (cf. Lightning's LearningRateMonitor)."""
        module = require_explainable(pl_module, "GradCAMLogger")
        self._explainer_for(module)  # layer names and method, checked now
        if stage in ("fit", "validate"):
            # The datamodule's own setup has run by now (Lightning calls it before the callbacks').
            datamodule = trainer.datamodule
            if getattr(datamodule, "val_dataset", None) is None:
                raise RuntimeError(
                    "GradCAMLogger needs a datamodule with a `val_dataset` (images and .labels); got "
                    f"{type(datamodule).__name__ if datamodule is not None else 'no datamodule'}. Pass "
                    "`datamodule=` to trainer.fit/validate or disable the callback."
                )
        if self._writer(trainer) is None and trainer.is_global_zero and not self._no_logger_warned:
            log.warning(
                "GradCAMLogger: no TensorBoardLogger among the trainer's loggers; nothing is logged "
                "(callbacks.grad_cam.enabled=false silences this)."
            )
            self._no_logger_warned = True

    def _explainer_for(self, module: Any) -> Explainer:
        if self._explainer is None or self._explainer.model is not module.model:
            self._explainer = Explainer.of(
                module, self.layers, method=self.method, colormap=self.colormap, alpha=self.alpha
            )
        return self._explainer

    # ------------------------------------------------------------------------------------------------- probe
    def _probe_on(self, trainer: L.Trainer, device: torch.device) -> tuple[Tensor, Tensor]:
        """The probe batch (normalized images, labels), built once and kept on the model's device."""
        if self._probe is None or self._probe[0].device != device:
            dataset = trainer.datamodule.val_dataset
            items = [dataset[i] for i in select_probe(dataset.labels, self.num_images)]
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
            # The safety net is for failures at run time (a layer without a 4-D map, out of memory...):
            # configuration errors were raised in `setup`.
            if self.strict:
                raise
            if not self._failure_warned:
                log.warning(
                    "GradCAMLogger failed; training continues without CAMs.\n%s", traceback.format_exc()
                )
                self._failure_warned = True

    @staticmethod
    def _writer(trainer: L.Trainer) -> Any:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, writer: Any) -> None:
        images, labels = self._probe_on(trainer, pl_module.device)
        explainer = self._explainer_for(pl_module)
        # One engine pass for every layer; its targets are the predicted classes, which the captions show.
        explained = explainer.explain(images, labels=labels)
        step = trainer.global_step
        for layer in explained.layers:
            writer.add_image(f"gradcam/{layer}", explained.grid([layer]), step, dataformats="CHW")
        writer.add_image("gradcam/overview", explained.grid(), step, dataformats="CHW")
        if self.faithfulness:
            for layer, values in explainer.faithfulness(explained).items():
                writer.add_scalar(f"gradcam/average_drop/{layer}", float(values["average_drop"]), step)
                writer.add_scalar(
                    f"gradcam/increase_in_confidence/{layer}", float(values["increase_in_confidence"]), step
                )
        writer.flush()
