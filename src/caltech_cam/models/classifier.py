"""One LightningModule for every backbone: loss, top-1/top-5 metrics, optimizer groups, backbone freezing.

Its checkpoints (hyperparameter layout, older layouts, loading) are `models.checkpoints`; the compiled forward is
`models.compiled`; the metrics are `models.metrics`.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR
from torchmetrics import MetricCollection

from caltech_cam.data.presets import Preset, as_preset
from caltech_cam.models.checkpoints import HPARAMS_FORMAT, upgrade_hparams
from caltech_cam.models.compiled import CompiledHandle, check_compile_options
from caltech_cam.models.discovery import check_cam_layers
from caltech_cam.models.metrics import accuracy_metrics
from caltech_cam.models.outputs import split_outputs
from caltech_cam.models.registry import ModelSpec, build_model, get_spec
from caltech_cam.models.weights import under
from caltech_cam.utils.configs import config_default, partial_of

log = logging.getLogger(__name__)


def default_optimizer() -> dict[str, Any]:
    """What `optimizer=None` means: the optimizer conf/classifier.yaml selects (conf/model/optimizer/sgd.yaml)."""
    return config_default("classifier", "optimizer")


def default_scheduler() -> dict[str, Any]:
    """What `scheduler=None` means: the scheduler conf/classifier.yaml selects (conf/model/scheduler/cosine.yaml)."""
    return config_default("classifier", "scheduler")


def default_preset(
    spec: ModelSpec, arch: str | None, pretrained: bool, kwargs: dict[str, Any] | None
) -> Preset:
    """What `preset=None` means: a library architecture's own preset, else the spec's study preset."""
    if spec.library is None:
        return as_preset(spec.preset)
    return spec.library.preset(spec.check_arch(arch), pretrained, kwargs or {})


class ClassifierModule(L.LightningModule):
    """Fine-tunes one of `MODEL_SPECS` on images prepared by a `Preset`.

    `conf/model/<name>.yaml` is this constructor's config (one `instantiate`); its defaults equal these.
    All arguments are plain values (names, numbers, lists, dicts) so that checkpoints load with
    `torch.load(weights_only=True)` and record the whole experiment. `preset` is a preset name, a name with
    size overrides, or a whole `Preset.as_dict()`; it is recorded whole, so a checkpoint keeps its normalization.
    `optimizer`/`scheduler` are dicts with `_target_` (Hydra partials); None is train's default, the option
    conf/classifier.yaml selects (`default_optimizer()`, `default_scheduler()`: read from the YAML, the one place
    it is written), and `scheduler={}` keeps the learning rate constant.
    `options` are the backbone's architecture options (`ModelSpec.options`, e.g. my_inception_v3's block and
    batch_norm); None or missing keys take the registered defaults, and they are recorded whole.
    `compile=True` runs the training/evaluation forward through `torch.compile(self.model, mode=compile_mode,
    backend=compile_backend)`, a handle kept outside the module tree: `.model` stays the original module, so layer
    names, hooks (the CAM engine runs it eagerly), state-dict and checkpoint keys are those of an eager run.
    `arch` and `kwargs` (model=torchvision, model=timm): the library's architecture and its constructor's
    arguments; `head` names the module replaced for the classes (None: found); `cam_layers` overrides the CAM
    layers (None: the registered ones, or the stages found). A library model records the head and layers found.
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
        arch: str | None = None,
        kwargs: dict[str, Any] | None = None,
        head: str | None = None,
        cam_layers: list[str] | None = None,
    ) -> None:
        super().__init__()
        spec = get_spec(model_name)
        spec.check_arch(arch)
        resolved = default_preset(spec, arch, pretrained, kwargs) if preset is None else as_preset(preset)
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
        self._compiled = CompiledHandle(compile_mode, compile_backend) if compile else None
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
            arch=arch,
            kwargs=kwargs,
            head=head,
        )
        self.head_prefixes, self.cam_layers = self._layout(head, cam_layers)
        self.train_metrics = accuracy_metrics(num_classes, "train/", per_class=False)
        self.val_metrics = accuracy_metrics(num_classes, "val/", per_class=True)
        self.test_metrics = accuracy_metrics(num_classes, "test/", per_class=True)

    def _layout(self, head: str | None, cam_layers: list[str] | None) -> tuple[tuple[str, ...], list[str]]:
        """(head prefixes, CAM layers): the registration's for the study's models (`cam_layers` checked when
        given); for a library's any-arch model, found in the built network, recorded in the hyperparameters (a
        checkpoint rebuilds the same head and layers whatever a later release finds) and logged."""
        spec = self.spec
        if spec.library is None:
            layers = (
                spec.cam_layers
                if cam_layers is None
                else check_cam_layers(self.model, cam_layers, spec.cam_layers)
            )
            return spec.head_prefixes, list(layers)
        found, layers = spec.library.layout(self.model, head, cam_layers)
        self.hparams.update({"head": found, "cam_layers": list(layers)})
        log.info(
            "%s %s: head %s, CAM layers %s (model.cam_layers=[...] to change)",
            self.hparams.model_name,
            self.hparams.arch,
            found,
            list(layers),
        )
        return (found,), list(layers)

    def is_head(self, name: str) -> bool:
        """Whether a parameter/module name of `.model` belongs to the new head (own learning rate, never frozen)."""
        return under(name, self.head_prefixes)

    # ----------------------------------------------------------------------------------------- forward / loss
    def forward(self, x: Tensor) -> Tensor:
        logits, _ = split_outputs(self.network(x))
        return logits

    @property
    def network(self) -> nn.Module:
        """What the steps call: `.model` itself, or with `compile=True` its `torch.compile` handle (built on first
        use, kept outside the module tree: `models.compiled.CompiledHandle`)."""
        return self._compiled(self.model) if self._compiled is not None else self.model

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
        return [p for n, p in self.model.named_parameters() if not self.is_head(n)]

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if self.is_head(n)]

    def configure_optimizers(self) -> Any:
        settings = dict(self.hparams.optimizer or default_optimizer())
        make_optimizer = partial_of(settings, "model.optimizer")
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
        chosen = default_scheduler() if self.hparams.scheduler is None else self.hparams.scheduler
        if not chosen:
            return optimizer
        settings = dict(chosen)
        interval = settings.pop("interval", "epoch")
        make_scheduler = partial_of(settings, "model.scheduler")
        # Matched by class, so a subclass or a wrapper's own class path gets the same fill.
        kind = make_scheduler.func
        if isinstance(kind, type) and issubclass(kind, CosineAnnealingLR) and settings.get("T_max") is None:
            # One half cosine over the whole run, in the scheduler's steps.
            run = self.trainer.max_epochs if interval == "epoch" else self.trainer.estimated_stepping_batches
            make_scheduler.keywords["T_max"] = int(run)
        if isinstance(kind, type) and issubclass(kind, OneCycleLR):
            # One peak per parameter group (keeps backbone_lr_mult), over the whole run unless given.
            make_scheduler.keywords["max_lr"] = [group["lr"] for group in optimizer.param_groups]
            if settings.get("total_steps") is None:
                make_scheduler.keywords["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = make_scheduler(optimizer=optimizer)
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
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not self.is_head(name):
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
