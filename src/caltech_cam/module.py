"""One LightningModule for every backbone: loss, top-1/top-5 metrics, optimizer groups, backbone freezing."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from caltech_cam.data.presets import Preset, make_preset
from caltech_cam.metrics import ImageCount, MeanClassAccuracy
from caltech_cam.models import build_model, get_spec, split_outputs

log = logging.getLogger(__name__)

# The layout of the hyperparameters a checkpoint records (key "hparams_format", not a constructor argument).
# 1 (no key): before architecture options; my_inception_v3 was torchvision's InceptionA block with BatchNorm.
# 2: `options` recorded whole (ModelSpec.options, defaults filled in).
HPARAMS_FORMAT = 2
# What an old (format 1) my_inception_v3 checkpoint was built as: the options that rebuild it exactly.
FORMAT1_OPTIONS = {"my_inception_v3": {"block": "inception_a", "batch_norm": True}}

# What optimizer=None / scheduler=None mean: train's defaults, conf/model/optimizer/sgd.yaml and
# conf/model/scheduler/cosine.yaml (tests/test_models.py checks they are equal). scheduler={} is no schedule.
DEFAULT_OPTIMIZER: dict[str, Any] = {
    "_target_": "torch.optim.SGD",
    "_partial_": True,
    "lr": 0.01,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 1.0e-4,
}
DEFAULT_SCHEDULER: dict[str, Any] = {
    "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
    "_partial_": True,
    "T_max": None,
    "interval": "epoch",
}


def as_preset(preset: str | Mapping[str, Any]) -> Preset:
    """A `Preset` from its name, from a name with size overrides ({"name", "resize", "crop", ...}: `make_preset`),
    or from a whole recorded preset (`Preset.as_dict()`, as checkpoints hold it)."""
    if isinstance(preset, str):
        return make_preset(preset)
    if "in_channels" in preset:
        return Preset.from_dict(preset)
    options = dict(preset)
    return make_preset(options.pop("name"), **options)


def _accuracy_metrics(num_classes: int, prefix: str, per_class: bool) -> MetricCollection:
    """Top-1 and top-5 accuracy, micro-averaged (fraction of all images), plus mean per-class top-1 accuracy."""
    metrics: dict[str, Metric] = {
        "acc_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
        "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
    }
    if per_class:
        metrics["acc_mean_class"] = MeanClassAccuracy(num_classes)
        metrics["images"] = ImageCount()
    return MetricCollection(metrics, prefix=prefix)


class ClassifierModule(L.LightningModule):
    """Fine-tunes one of `MODEL_SPECS` on images prepared by a `Preset`.

    `conf/model/<name>.yaml` is this constructor's config (one `instantiate`); its defaults equal these.
    All arguments are plain values (names, numbers, lists, dicts) so that checkpoints load with
    `torch.load(weights_only=True)` and record the whole experiment. `preset` is a preset name, a name with
    size overrides, or a whole `Preset.as_dict()`; it is recorded whole, so a checkpoint keeps its normalization.
    `optimizer`/`scheduler` are dicts with `_target_` (Hydra partials); None is train's default
    (`DEFAULT_OPTIMIZER`, `DEFAULT_SCHEDULER`) and `scheduler={}` keeps the learning rate constant.
    `options` are the backbone's architecture options (`ModelSpec.options`, e.g. my_inception_v3's block and
    batch_norm); None or missing keys take the registered defaults, and they are recorded whole.
    `compile=True` runs the training/evaluation forward through `torch.compile(self.model, mode=compile_mode,
    backend=compile_backend)`, a handle kept outside the module tree: `.model` stays the original module, so layer
    names, hooks (the CAM engine runs it eagerly), state-dict and checkpoint keys are those of an eager run.
    """

    def __init__(
        self,
        model_name: str,
        num_classes: int,
        class_names: list[str] | None = None,
        preset: str | dict[str, Any] | None = None,
        pretrained: bool = False,
        weights_path: str | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        backbone_lr_mult: float = 0.1,
        freeze_backbone_epochs: int = 0,
        label_smoothing: float = 0.0,
        aux_weight: float = 0.4,
        channels_last: bool | str = "auto",
        compile: bool = False,
        compile_mode: str = "default",
        compile_backend: str = "inductor",
        monitor: str = "val/acc_top1",
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        spec = get_spec(model_name)
        resolved = as_preset(spec.preset if preset is None else preset)
        spec.check_preset(resolved.name)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names were given.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        check_compile_options(compile, compile_mode, compile_backend)
        preset = resolved.as_dict()  # what save_hyperparameters records
        options = spec.resolve_options(options)
        self.save_hyperparameters()
        self.hparams["hparams_format"] = HPARAMS_FORMAT

        self.spec = spec
        self.preset: Preset = resolved
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.cam_layers = list(spec.cam_layers)
        self.model = build_model(
            model_name,
            num_classes,
            in_channels=resolved.in_channels,
            pretrained=pretrained,
            weights_path=weights_path,
            image_size=resolved.output_size,
            input_mean=resolved.mean,
            input_std=resolved.std,
            options=options,
        )
        self.train_metrics = _accuracy_metrics(num_classes, "train/", per_class=False)
        self.val_metrics = _accuracy_metrics(num_classes, "val/", per_class=True)
        self.test_metrics = _accuracy_metrics(num_classes, "test/", per_class=True)

    # ----------------------------------------------------------------------------------------- forward / loss
    def forward(self, x: Tensor) -> Tensor:
        logits, _ = split_outputs(self.network(x))
        return logits

    @property
    def network(self) -> nn.Module:
        """What the steps call: `.model` itself, or with `compile=True` its `torch.compile` handle (built on first
        use). The handle lives in `__dict__`, not among the submodules: no `_orig_mod.` in names or state-dict
        keys, and `.model` can still be run eagerly with hooks (a hook on compiled code breaks its graph)."""
        if not self.hparams.compile:
            return self.model
        compiled = self.__dict__.get("_compiled")
        if compiled is None or compiled._orig_mod is not self.model:
            compiled = torch.compile(
                self.model, mode=self.hparams.compile_mode, backend=self.hparams.compile_backend
            )
            self.__dict__["_compiled"] = (
                compiled  # bypasses nn.Module.__setattr__: not a registered submodule
            )
        return compiled

    def __getstate__(self) -> dict[str, Any]:
        # Compiled code does not pickle (ddp_spawn, deepcopy); each copy compiles its own on first use.
        state = super().__getstate__()
        state.pop("_compiled", None)
        return state

    def _use_channels_last(self) -> bool:
        flag = self.hparams.channels_last
        return self.device.type == "cuda" if flag == "auto" else bool(flag)

    def on_fit_start(self) -> None:
        if self._use_channels_last():
            self.model.to(memory_format=torch.channels_last)

    def _step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch
        if not x.is_floating_point():
            raise TypeError(
                f"the model got a {x.dtype} batch: with data.cache=uint8 the datamodule finishes batches on the "
                "device (on_after_batch_transfer), so pass datamodule= to the Trainer, or call "
                "datamodule.finish_batch(images, train) on batches you feed yourself"
            )
        if self._use_channels_last():
            x = x.contiguous(memory_format=torch.channels_last)
        logits, aux = split_outputs(self.network(x))
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        if aux is not None:
            # InceptionV3's auxiliary classifier (Szegedy et al. 2016): loss = main + 0.4 * aux.
            aux_loss = F.cross_entropy(aux, y, label_smoothing=self.hparams.label_smoothing)
            loss = loss + self.hparams.aux_weight * aux_loss
        return loss, logits, y

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, logits, y = self._step(batch)
        self.train_metrics.update(logits.detach(), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=y.shape[0])
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=y.shape[0])
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str, metrics: MetricCollection) -> None:
        loss, logits, y = self._step(batch)
        metrics.update(logits, y)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=y.shape[0])
        self.log_dict(metrics, on_epoch=True, prog_bar=(stage == "val"), batch_size=y.shape[0])

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)

    # ----------------------------------------------------------------------------------------- optimisation
    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if not self.spec.is_head(n)]

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if self.spec.is_head(n)]

    def configure_optimizers(self) -> Any:
        cfg = dict(self.hparams.optimizer or DEFAULT_OPTIMIZER)
        cfg["_partial_"] = True
        make_optimizer = instantiate(cfg)
        base_lr = make_optimizer.keywords.get("lr", 1e-3)
        groups = [
            {"params": self.head_parameters(), "lr": base_lr, "name": "head"},
            {
                "params": self.backbone_parameters(),
                "lr": base_lr * self.hparams.backbone_lr_mult,
                "name": "backbone",
            },
        ]
        optimizer = make_optimizer([g for g in groups if g["params"]])
        chosen = DEFAULT_SCHEDULER if self.hparams.scheduler is None else self.hparams.scheduler
        if not chosen:
            return optimizer
        sched_cfg = dict(chosen)
        interval = sched_cfg.pop("interval", "epoch")
        sched_cfg["_partial_"] = True
        if sched_cfg["_target_"].endswith("CosineAnnealingLR") and sched_cfg.get("T_max") is None:
            # One half cosine over the whole run, in the scheduler's steps.
            run = self.trainer.max_epochs if interval == "epoch" else self.trainer.estimated_stepping_batches
            sched_cfg["T_max"] = int(run)
        if sched_cfg["_target_"].endswith("OneCycleLR"):
            # One peak per parameter group (keeps backbone_lr_mult), over the whole run unless given.
            sched_cfg["max_lr"] = [group["lr"] for group in optimizer.param_groups]
            if sched_cfg.get("total_steps") is None:
                sched_cfg["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(sched_cfg, _convert_="all")(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": self.hparams.monitor},
        }

    def _backbone_frozen(self) -> bool:
        return self.current_epoch < self.hparams.freeze_backbone_epochs

    def on_train_epoch_start(self) -> None:
        frozen = self._backbone_frozen()
        if self.hparams.freeze_backbone_epochs:
            # A frozen backbone keeps its BatchNorm statistics too; they learn again once it thaws.
            for name, module in self.model.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not self.spec.is_head(name):
                    module.train(not frozen)
            if frozen and self.current_epoch == 0:
                log.info("Backbone frozen for the first %d epoch(s).", self.hparams.freeze_backbone_epochs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming (`ckpt_path`) a checkpoint of other architecture options is refused by name, before the
        state dict fails key by key (e.g. a my_inception_v3 run from before `block=study` became the default)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # loading for inspection only
            saved = upgrade_hparams(checkpoint.get("hyper_parameters") or {}, source="the checkpoint")
        if saved.get("model_name") != self.hparams.model_name or "options" not in saved:
            return
        options = self.spec.resolve_options(saved["options"])
        if options != self.hparams.options:
            overrides = " ".join(f"model.options.{k}={str(v).lower()}" for k, v in options.items())
            raise ValueError(
                f"the checkpoint's {self.hparams.model_name} was built with options {options}, this run with "
                f"{dict(self.hparams.options)}; resume it with {overrides}"
            )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._backbone_frozen():
            # Dropping the gradient (rather than toggling requires_grad) makes the optimizer skip these
            # parameters entirely (no momentum, no weight decay) and keeps DDP's reducer unchanged.
            for p in self.backbone_parameters():
                p.grad = None


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_options(enabled: bool, mode: str, backend: str) -> None:
    """Refuse an unknown `torch.compile` mode or backend when the module is built, not at the first step."""
    if mode not in COMPILE_MODES:
        raise ValueError(
            f"model.compile_mode={mode!r} is not a torch.compile mode; expected one of {COMPILE_MODES}."
        )
    if not enabled:
        return  # listing the backends imports torch._dynamo: only worth it when it will be used
    backends = torch._dynamo.list_backends(exclude_tags=())
    if backend not in backends:
        raise ValueError(
            f"model.compile_backend={backend!r} is not a torch.compile backend; expected one of {backends}."
        )


def upgrade_hparams(hparams: Mapping[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """Hyperparameters of an older checkpoint in today's layout, with a FutureWarning naming what was mapped.

    Older checkpoints record the preset as its name and size options ({"name", "resize", "crop", ...}); it is
    rebuilt from today's definition of that preset (mean/std), which is what loading them always meant.
    Checkpoints before `hparams_format` 2 record no architecture options: my_inception_v3's are then those that
    rebuild it exactly (`FORMAT1_OPTIONS`: block=inception_a, batch_norm=true). The returned dict holds
    constructor arguments only (`hparams_format` is dropped).
    """
    hparams = dict(hparams)
    version = hparams.pop("hparams_format", 1)
    if version > HPARAMS_FORMAT:
        raise ValueError(
            f"{source} records hyperparameters in format {version}; this release reads formats up to "
            f"{HPARAMS_FORMAT}: load it with the release that wrote it or a newer one."
        )
    if version < 2 and "options" not in hparams and hparams.get("model_name") in FORMAT1_OPTIONS:
        hparams["options"] = dict(FORMAT1_OPTIONS[hparams["model_name"]])
        warnings.warn(
            f"{source} is a {hparams['model_name']} checkpoint from before architecture options; it is read as "
            f"model.options={hparams['options']} (the layout it was trained with; the default is now the "
            "study's block without BatchNorm). Re-save it (trainer.save_checkpoint) to record them; the old "
            "layout will stop loading in a later release.",
            FutureWarning,
            stacklevel=3,
        )
    preset = hparams.get("preset")
    if isinstance(preset, Mapping) and "in_channels" not in preset:
        hparams["preset"] = as_preset(preset).as_dict()
        warnings.warn(
            f"{source} records its preset in the old layout, name and sizes only ({dict(preset)}); it is read as "
            f"preset {preset['name']!r} with today's normalization. Re-save it (trainer.save_checkpoint) to keep "
            "the new layout; the old one will stop loading in a later release.",
            FutureWarning,
            stacklevel=3,
        )
    return hparams


def load_classifier(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> ClassifierModule:
    """A trained `ClassifierModule` from a `train` checkpoint, in eval mode (pretrained weights are not re-fetched).

    Checkpoints from older releases load too: their hyperparameters are mapped by `upgrade_hparams`. The module
    runs eagerly whatever `compile` the run trained with: evaluating or explaining is a pass or two, which
    compiling (minutes on a CPU) would cost more than it saves.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint not found: {path}. Expected a .ckpt written by `python -m caltech_cam.train`: "
            "<run dir>/checkpoints/epochNNN.ckpt (the best epochs, also named in <run dir>/metrics.json as "
            "best_checkpoint) or <run dir>/checkpoints/last.ckpt."
        )
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path} is not a Lightning checkpoint of ClassifierModule (it has {sorted(checkpoint)[:6]}, "
            "expected 'hyper_parameters' and 'state_dict')."
        )
    hparams = upgrade_hparams(checkpoint["hyper_parameters"], source=str(path))
    module = ClassifierModule(**{**hparams, "pretrained": False, "weights_path": None, "compile": False})
    module.load_state_dict(checkpoint["state_dict"])
    return module.to(map_location).eval()
