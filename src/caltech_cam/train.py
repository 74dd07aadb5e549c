"""`python -m caltech_cam.train [model=...] [experiment=...]`: fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from caltech_cam.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_module,
    build_trainer,
    plain,
)
from caltech_cam.config import config_dir

log = logging.getLogger(__name__)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if isinstance(v, (int, float, torch.Tensor))}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment; returns the final metrics (also written to <run dir>/metrics.json)."""
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = build_callbacks(cfg.get("callbacks"), has_logger=bool(loggers))
    trainer = build_trainer(cfg, callbacks, loggers)
    for logger in loggers:
        logger.log_hyperparams(plain(cfg))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    results: dict[str, Any] = {"fit": _numbers(trainer.callback_metrics)}

    checkpoint = next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)
    best_path = checkpoint.best_model_path if checkpoint else ""
    if cfg.get("test") and not trainer.fast_dev_run:
        ckpt = best_path or None
        if ckpt is None:
            log.warning("No best checkpoint was saved; testing the weights as they are after fitting.")
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
        results["test"] = _numbers(tested[0] if tested else {})

    metric_name = cfg.get("optimized_metric")
    optimized = results["fit"].get(metric_name) if metric_name else None
    if checkpoint is not None and checkpoint.best_model_score is not None:
        optimized = float(checkpoint.best_model_score)
    results.update(
        model=cfg.model.model_name,
        optimized_metric=metric_name,
        optimized_value=optimized,
        best_checkpoint=best_path,
        last_checkpoint=str(Path(checkpoint.dirpath) / "last.ckpt")
        if checkpoint and checkpoint.dirpath
        else "",
        data=datamodule.summary(),
    )
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(results, indent=2, default=str))
        _print_results(results, output_dir)
    return results


def _print_results(results: dict[str, Any], output_dir: Path) -> None:
    lines = [f"Run directory: {output_dir}"]
    for stage in ("fit", "test"):
        for key, value in results.get(stage, {}).items():
            if key.startswith(("val/", "test/")):
                lines.append(f"  {key:<22} {value:.4f}")
    lines.append(f"  best checkpoint: {results['best_checkpoint'] or '(none)'}")
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    log.debug("Config:\n%s", OmegaConf.to_yaml(cfg))
    value = train(cfg).get("optimized_value")
    return None if value is None or math.isnan(value) else value


if __name__ == "__main__":
    main()
