"""`python -m caltech_cam.train [model=...] [experiment=...]`: fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from caltech_cam.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_module,
    build_trainer,
    check_model_config,
    numbers,
    training_run_dir,
    write_results,
)
from caltech_cam.config import config_dir, plain
from caltech_cam.data import MANIFEST_NAME, CaltechDataModule
from caltech_cam.launch import check_launcher
from caltech_cam.module import ClassifierModule
from caltech_cam.resume import apply_resume

log = logging.getLogger(__name__)


def _reuse_split_when_resuming(cfg: DictConfig) -> None:
    """Resuming must see the interrupted run's split, not a new one: default data.split_file to its manifest."""
    if not cfg.get("ckpt_path") or cfg.data.get("split_file"):
        return
    run = training_run_dir(Path(cfg.ckpt_path))
    if run is not None and (run / MANIFEST_NAME).is_file():
        with open_dict(cfg):
            cfg.data.split_file = str(run / MANIFEST_NAME)
        log.info("Resuming: reusing the split of %s", run / MANIFEST_NAME)


def _test(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: ClassifierModule,
    datamodule: CaltechDataModule,
    ckpt: str | None,
) -> dict[str, float]:
    if ckpt is None:
        log.warning("No best checkpoint was saved; testing the weights as they are after fitting.")
    if trainer.world_size == 1:
        return numbers(trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)[0])
    # Under DDP the distributed sampler pads the test split with repeated images, which would count some twice:
    # score it once, on one device, on rank 0.
    if not trainer.is_global_zero:
        return {}
    single = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.get("precision", "32-true"),
        logger=trainer.loggers,
        enable_progress_bar=False,
        default_root_dir=cfg.paths.output_dir,
    )
    return numbers(single.test(module, datamodule=datamodule, ckpt_path=ckpt)[0])


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment; returns the final metrics (also written to <run dir>/metrics.json)."""
    check_model_config(cfg)
    check_launcher()
    apply_resume(cfg)
    _reuse_split_when_resuming(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), has_logger=bool(loggers))
    trainer = build_trainer(cfg, callbacks, loggers)
    for logger in loggers:
        logger.log_hyperparams(plain(cfg))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    results: dict[str, Any] = {"model": cfg.model.model_name, "fit": numbers(trainer.callback_metrics)}

    checkpoint = next(
        (c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
    )
    best_path = checkpoint.best_model_path if checkpoint else ""
    if cfg.get("test") and not trainer.fast_dev_run:
        results["test"] = _test(cfg, trainer, module, datamodule, best_path or None)

    metric_name = cfg.get("optimized_metric")
    optimized = results["fit"].get(metric_name) if metric_name else None
    if checkpoint is not None and checkpoint.best_model_score is not None:
        optimized = float(checkpoint.best_model_score)
    results.update(
        optimized_metric=metric_name,
        optimized_value=optimized,
        best_checkpoint=best_path,
        last_checkpoint=str(Path(checkpoint.dirpath) / "last.ckpt")
        if checkpoint and checkpoint.dirpath
        else "",
        data=datamodule.summary(),
    )
    if trainer.is_global_zero:
        write_results(results, Path(cfg.paths.output_dir), stages=("fit", "test"))
    return results


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    log.debug("Config:\n%s", OmegaConf.to_yaml(cfg))
    value = train(cfg).get("optimized_value")
    return None if value is None or math.isnan(value) else value


if __name__ == "__main__":
    main()
