"""Turn a composed Hydra config into the objects every entry point needs: datamodule, module, callbacks, loggers."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig

from caltech_cam.data import CaltechDataModule
from caltech_cam.data.presets import Preset
from caltech_cam.models import get_spec
from caltech_cam.models.classifier import ClassifierModule
from caltech_cam.run.sinks import check_logger_packages
from caltech_cam.utils.configs import plain

log = logging.getLogger(__name__)


def check_model_config(cfg: DictConfig) -> None:
    """Refuse an unknown model or a preset it cannot take before any data is touched (indexing 30k files)."""
    spec = get_spec(cfg.model.model_name)
    spec.check_preset(cfg.data.preset, key="data.preset")
    spec.check_arch(cfg.model.get("arch"))


def model_preset(cfg: DictConfig) -> Preset | None:
    """A library model's own preset (model=torchvision, model=timm), sized by the data: None for the study's models,
    whose preset is `data.preset`. A `data.resize` that is set wins with `data.crop` as it is (null: no crop, as
    experiment=demo's 64 px); else a `data.crop` that is set replaces the model's crop. The training-only
    augmentation (`data.random_resized_crop`, `data.hflip`) is the data's."""
    spec = get_spec(cfg.model.model_name)
    if spec.library is None:
        return None
    base = spec.library.preset(
        spec.check_arch(cfg.model.arch), bool(cfg.model.pretrained), plain(cfg.model.get("kwargs")) or {}
    )
    data = cfg.data
    resize, crop = base.resize, base.crop
    if data.get("resize") is not None:
        resize, crop = int(data.resize), data.get("crop")
    elif data.get("crop") is not None:
        crop = data.crop
    if crop is not None and not 1 <= int(crop) <= resize:
        raise ValueError(
            f"data.crop={crop} must be between 1 and the resize, {resize} ({spec.name}'s preset)"
        )
    return dataclasses.replace(
        base,
        resize=resize,
        crop=None if crop is None else int(crop),
        random_resized_crop=bool(data.get("random_resized_crop", False)),
        hflip=bool(data.get("hflip", False)),
    )


def build_datamodule(data: DictConfig, preset: Preset | None = None) -> CaltechDataModule:
    """Instantiate a `data` config node. Only the class folders are listed (for `num_classes` and class names);
    preparing (generation, download, decode check) and splitting are left to the Trainer's `prepare_data`/`setup`,
    which it runs on the right ranks. Outside a Trainer, call `prepare_data()` and `setup()` yourself.
    `preset` (a library model's, `model_preset`) replaces the one `data.preset` names, before anything reads it."""
    datamodule = instantiate(data, _recursive_=False, _convert_="all")
    if preset is not None:
        datamodule.preset = preset
    return datamodule


def prepared_datamodule(
    data: DictConfig, stage: str | None = None, preset: Preset | None = None
) -> CaltechDataModule:
    """`build_datamodule`, then `prepare_data()` and `setup(stage)` in this process: for use outside a Trainer
    (evaluate, notebooks, tests). Inside one, the Trainer runs them on the right ranks."""
    datamodule = build_datamodule(data, preset)
    datamodule.prepare_data()
    datamodule.setup(stage)
    return datamodule


def build_module(cfg: DictConfig, datamodule: CaltechDataModule) -> ClassifierModule:
    """`instantiate(cfg.model)`: the YAML is ClassifierModule's constructor; the data adds its class count, class
    names and preset (which replace `model.num_classes` and `model.preset`) as instantiate keyword arguments."""
    declared = cfg.model.get("num_classes")
    if declared is not None and declared != datamodule.num_classes:
        raise ValueError(
            f"model.num_classes={declared} disagrees with the data, which has {datamodule.num_classes} classes "
            f"(data.root={datamodule.root}); leave model.num_classes=null to take it from the data."
        )
    # `small_input` is the one model setting that is not an argument: experiment=demo sizes the data with it.
    node = plain(cfg.model)
    node.pop("small_input", None)
    return instantiate(
        node,
        num_classes=datamodule.num_classes,
        class_names=list(datamodule.class_names),
        preset=datamodule.preset.as_dict(),
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


def check_loggers(cfg: DictConfig | None) -> None:
    """Refuse a configured logger whose package is missing (naming the pip extra), before any data is touched."""
    check_logger_packages(
        {name: node["_target_"] for name, node in (cfg or {}).items() if node and "_target_" in node}
    )


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    """Every `logger.*` node with a `_target_` (`logger=many` or `logger=[tensorboard,mlflow]`: several)."""
    check_loggers(cfg)
    return [instantiate(node) for node in (cfg or {}).values() if node and "_target_" in node]


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Any]) -> L.Trainer:
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
