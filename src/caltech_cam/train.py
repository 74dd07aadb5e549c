"""`python -m caltech_cam.train [model=...] [experiment=...]`: fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from caltech_cam.callbacks import SameRunDirectory
from caltech_cam.data import CaltechDataModule
from caltech_cam.run.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_module,
    build_trainer,
    check_loggers,
    check_model_config,
    model_preset,
)
from caltech_cam.run.config import config_dir, register_resolvers
from caltech_cam.run.launch import check_launch
from caltech_cam.run.results import numbers, viewing_hint, write_results
from caltech_cam.run.resume import apply_resume
from caltech_cam.utils.configs import plain

log = logging.getLogger(__name__)


def _data_summary(datamodule: CaltechDataModule) -> dict[str, Any]:
    """The data summary; under `ddp_spawn` the ranks set the data up in their own processes, so this one reads the
    prepared verdicts and splits once more (nothing is decoded again)."""
    if datamodule.train_dataset is None:
        datamodule.setup()
    return datamodule.summary()


def _best_score(checkpoint: ModelCheckpoint | None, best_path: str) -> float | None:
    """The best monitored value. Under `ddp_spawn` the launcher sends back the best checkpoint's path but not its
    score, so it is read from the checkpoint file, which records its ModelCheckpoint's state."""
    if checkpoint is None:
        return None
    if checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    if not best_path or not Path(best_path).is_file():
        return None
    state = torch.load(best_path, map_location="cpu", weights_only=True)["callbacks"].get(
        checkpoint.state_key, {}
    )
    score = state.get("best_model_score")
    return None if score is None else float(score)


def train(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Run one experiment; returns the final metrics (also written to <run dir>/metrics.json by global rank 0).

    Under DDP every rank runs this whole function (Lightning's `ddp` re-runs the command per rank; SLURM and
    torchrun start every rank): the test split is scored once across the ranks (each image on one rank, none
    padded twice) and only rank 0 writes results. `callbacks` are added to the configured ones (e.g. a tuner's).
    """
    check_model_config(cfg)
    check_loggers(cfg.get("logger"))
    check_launch(cfg)
    apply_resume(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data, model_preset(cfg))
    module = build_module(cfg, datamodule)
    loggers = build_loggers(cfg.get("logger"))
    all_callbacks = [
        *build_callbacks(cfg.get("callbacks"), has_logger=bool(loggers)),
        SameRunDirectory(cfg.paths.output_dir),
        *callbacks,
    ]
    trainer = build_trainer(cfg, all_callbacks, loggers)
    for logger in loggers:
        logger.log_hyperparams(plain(cfg))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    results: dict[str, Any] = {"model": cfg.model.model_name, "fit": numbers(trainer.callback_metrics)}

    checkpoint = next(
        (c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
    )
    best_path = checkpoint.best_model_path if checkpoint else ""
    if cfg.get("test") and not trainer.fast_dev_run:
        if not best_path:
            log.warning("No best checkpoint was saved; testing the weights as they are after fitting.")
        # Same trainer on every rank: the datamodule's test loader shards without padding (eval_sampler).
        results["test"] = numbers(trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None)[0])

    metric_name = cfg.get("optimized_metric")
    optimized = results["fit"].get(metric_name) if metric_name else None
    best_score = _best_score(checkpoint, best_path)
    if best_score is not None:
        optimized = best_score
    results.update(
        optimized_metric=metric_name,
        optimized_value=optimized,
        best_checkpoint=best_path,
        last_checkpoint=str(Path(checkpoint.dirpath) / "last.ckpt")
        if checkpoint and checkpoint.dirpath
        else "",
        world_size=trainer.world_size,
        data=_data_summary(datamodule),
    )
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        write_results(results, output_dir, stages=("fit", "test"), footer=viewing_hint(loggers, output_dir))
    return results


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    log.debug("Config:\n%s", OmegaConf.to_yaml(cfg))
    value = train(cfg).get("optimized_value")
    return None if value is None or math.isnan(value) else value


if __name__ == "__main__":
    main()
