"""Turn a composed Hydra config into the objects every entry point needs: datamodule, module, callbacks, loggers."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from caltech_cam.data import CaltechDataModule
from caltech_cam.models import MODEL_SPECS
from caltech_cam.module import ClassifierModule

log = logging.getLogger(__name__)

# Keys of the `model` config group that are not ClassifierModule arguments.
_MODEL_CONFIG_ONLY = {"preset", "num_classes", "small_input"}


def plain(node: Any) -> Any:
    """A resolved, plain-Python copy of a config node (checkpoints must hold plain values only)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_datamodule(cfg: DictConfig) -> CaltechDataModule:
    """Instantiate `cfg.data`, then index, check and split it so that `num_classes` and class names are known."""
    datamodule: CaltechDataModule = instantiate(cfg.data, _recursive_=False, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_module(cfg: DictConfig, datamodule: CaltechDataModule) -> ClassifierModule:
    """The LightningModule for `cfg.model`, sized by the data and fed by its preset."""
    model_cfg = plain(cfg.model)
    name = model_cfg.get("model_name")
    if name not in MODEL_SPECS:
        raise ValueError(f"Unknown model {name!r}; expected one of {sorted(MODEL_SPECS)} (model=<name>).")
    num_classes = model_cfg.get("num_classes")
    if num_classes is not None and num_classes != datamodule.num_classes:
        raise ValueError(
            f"model.num_classes={num_classes} disagrees with the data, which has {datamodule.num_classes} classes "
            f"(data.root={cfg.data.root}); leave model.num_classes=null to take it from the data."
        )
    preset = datamodule.preset
    kwargs = {k: v for k, v in model_cfg.items() if k not in _MODEL_CONFIG_ONLY}
    return ClassifierModule(
        **kwargs,
        num_classes=datamodule.num_classes,
        class_names=list(datamodule.class_names),
        preset={
            "name": preset.name,
            "resize": preset.resize,
            "crop": preset.crop,
            "random_resized_crop": preset.random_resized_crop,
            "hflip": preset.hflip,
        },
        monitor=cfg.get("optimized_metric", "val/acc_top1"),
    )


def build_callbacks(cfg: DictConfig | None, *, has_logger: bool = True) -> list[L.Callback]:
    """Every callback config with a `_target_`, except those that say `enabled: false` (and, without a logger,
    the learning-rate monitor, which Lightning refuses to run then)."""
    callbacks: list[L.Callback] = []
    for name, node in (cfg or {}).items():
        node = dict(plain(node) or {})
        if not node.pop("enabled", True):
            log.info("Callback %s disabled.", name)
            continue
        if "_target_" not in node:
            raise ValueError(f"callbacks.{name} has no _target_; expected a callback class path.")
        callback = instantiate(node)
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            log.info("Callback %s skipped: it needs a logger and logger=none.", name)
            continue
        callbacks.append(callback)
    return callbacks


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    return [instantiate(node) for node in (cfg or {}).values() if node and "_target_" in node]


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Any]) -> L.Trainer:
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
