"""`GradCAMLogger`: Grad-CAM of every network stage at each validation end, to every logger (`run.sinks`), rank 0."""

from __future__ import annotations

import itertools
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor

from caltech_cam.cam.engine import cams_from_capture, capture
from caltech_cam.cam.explainer import Explainer, require_explainable
from caltech_cam.cam.methods import get_method
from caltech_cam.cam.metrics.localization import box_masks, default_tolerance, map_boxes
from caltech_cam.cam.metrics.registry import METRICS, MapBatch
from caltech_cam.cam.render import check_style
from caltech_cam.cam.scoring import select_images
from caltech_cam.run.sinks import Sinks

log = logging.getLogger(__name__)

# Localization images per validation end when `localization_images` is not given (all of a smaller set, said once).
LOCALIZATION_IMAGES = 64


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


@dataclass(frozen=True)
class LocalizationSet:
    """The validation images the localization scalars are scored on, fixed in `setup`.

    `indices` into the validation set (the seeded subset minus the excluded), `boxes` (M, 4) xyxy in model-input
    pixels, `drawn` how many were drawn, `no_box` / `cut_off` how many of those were excluded (no box, e.g.
    clutter; box entirely outside the crop).
    """

    indices: list[int]
    boxes: Tensor
    drawn: int
    no_box: int
    cut_off: int


class GradCAMLogger(L.Callback):
    """Logs, at every N-th validation end (sanity check skipped), on global rank 0 only, to every logger of the
    trainer through `run.sinks.Sinks` (TensorBoard, CSV files, MLflow, W&B; several at once):

    - `gradcam/<layer>`: the probe images with that layer's overlay, captioned true / predicted class;
    - `gradcam/overview`: rows = images, columns = input then each layer (the study's figure of ResNet stages);
    - `gradcam/average_drop/<layer>` and `gradcam/increase_in_confidence/<layer>`: faithfulness on the probe;
    - when the validation set has boxes (the datamodule's `boxes_for`: the synthetic set and CUB-200 have them,
      Caltech-256 does not) and `localization`: `gradcam/pointing_game/<layer>` (fraction of images whose map maximum lies within
      `tolerance` px of the box; default `localization.default_tolerance`, 15 px at 224) and
      `gradcam/energy_pointing_game/<layer>` (mean share of the map's mass inside the box), in [0, 1].

    The probe's maps explain the PREDICTED class (the captions say which). The localization maps explain the
    TRUE label (does the map point at the object it should find?), on a fixed subset of `localization_images`
    validation images drawn once with `seed` (`cam.scoring.select_images`: by default 64, all of them if the set
    is smaller, said once; an explicit `localization_images` larger than the set is an error),
    boxes mapped through the module's preset; images without a box or whose box the crop cuts off entirely are
    excluded and counted in a one-line note. They run in chunks of `chunk_size`, one engine pass (one forward,
    one gradient) per chunk for every layer; all scalars reach the host in one read per validation end.

    The module must be `caltech_cam.cam.Explainable` (`.model`, `.cam_layers`, `.class_names`, `.preset`).
    Configuration is checked in `setup`, before the first epoch and whatever `strict` says: the module, layer
    names, method (any alias of `methods.get_method`), the datamodule's `val_dataset`, and its boxes (paths that
    do not match, boxes outside the image); a trainer without a logger is warned about there once, and then
    nothing is logged (a logger that keeps no pictures is named once and gets the scalars). Other ranks return at once (no collectives inside, so no rank waits on another). The maps
    come from `Explainer` / engine passes on the unwrapped `pl_module.model`, which leave weights, `.grad`,
    BatchNorm statistics, RNG and module modes untouched. A datamodule with `finish_batch` (uint8 cached
    batches) finishes the stacked images as for validation, so the callback sees the model's normalized input.
    An exception while logging is warned about once and training continues, unless `strict`.
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
        localization: bool = True,
        localization_images: int | None = None,
        chunk_size: int = 32,
        tolerance: float | None = None,
        seed: int = 0,
        strict: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_images", num_images),
            ("every_n_epochs", every_n_epochs),
            ("localization_images", 1 if localization_images is None else localization_images),
            ("chunk_size", chunk_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if tolerance is not None and tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 pixels (or null: 15 px at 224), got {tolerance}.")
        check_style(colormap, alpha)
        self.num_images = num_images
        self.layers = list(layers) if layers else None
        self.method = get_method(method).name  # canonical: `gradcam++` is stored as `gradcampp`
        self.every_n_epochs = every_n_epochs
        self.colormap = colormap
        self.alpha = alpha
        self.faithfulness = faithfulness
        self.localization = localization
        self.localization_images = localization_images
        self.chunk_size = chunk_size
        self.tolerance = tolerance
        self.seed = seed
        self.strict = strict
        self.located: LocalizationSet | None = None  # set in setup when the validation set has boxes
        self._explainer: Explainer | None = None
        self._probe_indices: list[int] = []
        # Decoded once and kept on the device while the same files and device are asked for (key, tensors).
        self._probe: tuple[tuple, tuple[Tensor, Tensor]] | None = None
        self._subset: tuple[tuple, tuple[Tensor, Tensor, Tensor]] | None = None
        self._failure_warned = False
        self._no_logger_warned = False
        self._said: set[str] = set()

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
            self._probe_indices = select_probe(datamodule.val_dataset.labels, self.num_images)
            # Every rank checks the boxes (a bad boxes file stops all ranks alike); only rank 0 uses them.
            self.located = self._locate(datamodule, module, trainer.is_global_zero)
        sinks = Sinks.of(trainer.loggers)
        if not sinks and trainer.is_global_zero and not self._no_logger_warned:
            log.warning(
                "GradCAMLogger: the trainer has no logger; nothing is logged "
                "(logger=tensorboard, csv, mlflow, wandb or many; callbacks.grad_cam.enabled=false silences this)."
            )
            self._no_logger_warned = True
        for name in sinks.without_pictures:
            self._say(
                trainer.is_global_zero, f"GradCAMLogger: {name} keeps no pictures; it gets the scalars only."
            )

    def _locate(self, datamodule: Any, module: Any, talk: bool) -> LocalizationSet | None:
        """The localization subset with its boxes in model-input pixels, or None (off, or no boxes: said once)."""
        if not self.localization:
            return None
        dataset = datamodule.val_dataset
        find, paths = getattr(datamodule, "boxes_for", None), getattr(dataset, "paths", None)
        boxes = find(paths) if find is not None and paths is not None else None  # what evaluate reads too
        if boxes is None:
            why = (
                f"none for data.root={getattr(datamodule, 'root', None)}"
                if find is not None and paths is not None
                else "its datamodule has no .boxes_for or its dataset no .paths"
            )
            self._say(
                talk,
                f"GradCAMLogger: the validation set has no boxes ({why}); "
                "no localization scalars (gradcam/pointing_game, gradcam/energy_pointing_game).",
            )
            return None
        drawn, note = select_images(
            len(dataset),
            self.localization_images,
            self.seed,
            default=LOCALIZATION_IMAGES,
            what="the validation set",
            key="localization_images",
        )
        drawn = drawn.tolist()
        if note:
            self._say(talk, f"GradCAMLogger: localization scalars: {note}.")
        chosen = boxes.subset(drawn)
        mapped, kept = map_boxes(chosen, module.preset)
        present = chosen.present.bool()
        located = LocalizationSet(
            indices=[i for i, k in zip(drawn, kept.tolist(), strict=True) if k],
            boxes=mapped[kept],
            drawn=len(drawn),
            no_box=int((~present).sum()),
            cut_off=int((present & ~kept).sum()),
        )
        self._say(
            talk,
            f"GradCAMLogger: localization scalars on {len(located.indices)} of {located.drawn} validation images "
            f"(seed {self.seed}); excluded: {located.no_box} without a box, {located.cut_off} whose box the "
            "crop cuts off.",
        )
        if not located.indices:
            return None
        return located

    def _say(self, talk: bool, message: str) -> None:
        """An info line, once per callback and message, from rank 0."""
        if talk and message not in self._said:
            log.info(message)
            self._said.add(message)

    def _explainer_for(self, module: Any) -> Explainer:
        if self._explainer is None or self._explainer.model is not module.model:
            self._explainer = Explainer.of(
                module, self.layers, method=self.method, colormap=self.colormap, alpha=self.alpha
            )
        return self._explainer

    # ------------------------------------------------------------------------------------------------- images
    @staticmethod
    def _load(trainer: L.Trainer, indices: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
        """Validation images `indices` as the model sees them (normalized, on `device`) and their labels."""
        datamodule = trainer.datamodule
        dataset = datamodule.val_dataset
        items = [dataset[i] for i in indices]
        images = torch.stack([image for image, _ in items]).to(device)
        finish = getattr(datamodule, "finish_batch", None)
        if finish is not None:  # uint8 cached items: the datamodule's own evaluation preset, on the device
            images = finish(images, train=False)
        return images, torch.tensor([label for _, label in items], device=device)

    @staticmethod
    def _key(trainer: L.Trainer, indices: Sequence[int], device: torch.device) -> tuple:
        """What a kept batch depends on: the files (or indices) of the validation set, and the device."""
        paths = getattr(trainer.datamodule.val_dataset, "paths", None)
        return (tuple(str(paths[i]) for i in indices) if paths is not None else tuple(indices), str(device))

    def _probe_on(self, trainer: L.Trainer, device: torch.device) -> tuple[Tensor, Tensor]:
        """The probe batch (normalized images, labels), built once and kept on the model's device."""
        key = self._key(trainer, self._probe_indices, device)
        if self._probe is None or self._probe[0] != key:
            self._probe = (key, self._load(trainer, self._probe_indices, device))
        return self._probe[1]

    def _subset_on(self, trainer: L.Trainer, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The localization images, labels and box masks, built once and kept on the model's device."""
        assert self.located is not None
        key = self._key(trainer, self.located.indices, device)
        if self._subset is None or self._subset[0] != key:
            images, labels = self._load(trainer, self.located.indices, device)
            masks = box_masks(self.located.boxes.to(device), (images.shape[-2], images.shape[-1]))
            self._subset = (key, (images, labels, masks))
        return self._subset[1]

    def _tolerance(self, images: Tensor) -> float:
        """`tolerance`, or by default 15 px at 224 scaled to the input side (`localization.default_tolerance`)."""
        return self.tolerance if self.tolerance is not None else default_tolerance(max(images.shape[-2:]))

    # ------------------------------------------------------------------------------------------------- hooks
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        sinks = Sinks.of(trainer.loggers)
        if not sinks:
            return
        try:
            self._log(trainer, pl_module, sinks)
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

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, sinks: Sinks) -> None:
        images, labels = self._probe_on(trainer, pl_module.device)
        explainer = self._explainer_for(pl_module)
        # One engine pass for every layer; its targets are the predicted classes, which the captions show.
        explained = explainer.explain(images, labels=labels)
        step = trainer.global_step
        for layer in explained.layers:
            sinks.image(f"gradcam/{layer}", explained.grid([layer]), step)
        sinks.image("gradcam/overview", explained.grid(), step)
        scalars: dict[str, Tensor] = {}
        if self.faithfulness:
            for layer, values in explainer.faithfulness(explained).items():
                scalars[f"gradcam/average_drop/{layer}"] = values["average_drop"]
                scalars[f"gradcam/increase_in_confidence/{layer}"] = values["increase_in_confidence"]
        if self.located is not None:
            # The labels are the differentiated classes (gather saves them for backward): no inference tensors.
            with torch.inference_mode(False):
                scalars.update(self.localize(explainer, *self._subset_on(trainer, pl_module.device)))
        if scalars:
            # One host read for every scalar of this validation end.
            values = torch.stack([v.detach().float().reshape(()) for v in scalars.values()]).tolist()
            sinks.scalars(dict(zip(scalars, values, strict=True)), step)
        sinks.flush()

    def localize(
        self, explainer: Explainer, images: Tensor, labels: Tensor, masks: Tensor
    ) -> dict[str, Tensor]:
        """`gradcam/pointing_game/<layer>` and `gradcam/energy_pointing_game/<layer>`: 0-d tensors on the device,
        the means over `images` of the registered `localization` metric's columns (`cam.metrics.registry`, the
        function evaluate's table uses) on the maps of the TRUE `labels`, chunk by chunk, one engine pass per chunk
        for every layer."""
        size = (images.shape[-2], images.shape[-1])
        metric = METRICS["localization"]
        kept = torch.ones(
            images.shape[0], dtype=torch.bool, device=images.device
        )  # the excluded are not here
        columns = ("pointing_game", "energy_pointing_game")
        values: dict[tuple[str, str], list[Tensor]] = {
            (c, layer): [] for c in columns for layer in explainer.layers
        }
        for start in range(0, images.shape[0], self.chunk_size):
            part = slice(start, start + self.chunk_size)
            seen = capture(
                explainer.model,
                images[part],
                explainer.layers,
                targets=labels[part],
                gradients=explainer.method.uses_gradients,
            )
            for layer, maps in cams_from_capture(seen, explainer.method, size).items():
                view = MapBatch(
                    explainer.model,
                    images[part],
                    seen.targets,
                    seen.logits,
                    maps,
                    masks[part],
                    kept[part],
                    self._tolerance(images),
                    columns=columns,
                )
                scores = metric.fn(view)
                for column in columns:
                    values[(column, layer)].append(scores[column])
        # nanmean: a box clipped to under a pixel gives an empty mask, for which both scores are NaN.
        return {f"gradcam/{column}/{layer}": torch.cat(v).nanmean() for (column, layer), v in values.items()}
