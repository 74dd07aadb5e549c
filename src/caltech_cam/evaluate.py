"""`python -m caltech_cam.evaluate ckpt_path=...`: score a checkpoint on its run's test (or val) split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from caltech_cam.build import build_trainer, numbers, prepared_datamodule, training_run_dir, write_results
from caltech_cam.config import config_dir
from caltech_cam.data import MANIFEST_NAME
from caltech_cam.module import ClassifierModule, load_classifier

log = logging.getLogger(__name__)

# The splits a checkpoint can be scored on (data.splits.SPLITS are the three a split makes).
EVAL_SPLITS = ("test", "val")


def training_config(cfg: DictConfig, module: ClassifierModule, run_dir: Path | None) -> DictConfig:
    """The training run's config, with its split manifest, the checkpoint's preset and this command's overrides."""
    if run_dir is None:
        if cfg.data.root is None:
            raise ValueError(
                f"No training config next to {cfg.ckpt_path} (expected <run dir>/.hydra/config.yaml); "
                "pass data.root=<Caltech-layout folder> (and data.split_file=<split_manifest.csv> to reuse a split)."
            )
        # conf/data/caltech256.yaml, composed into `fallback_data` by evaluate.yaml's defaults.
        data = OmegaConf.create(OmegaConf.to_container(cfg.fallback_data, resolve=False))
        trained = OmegaConf.create({"data": data, "seed": cfg.seed, "paths": cfg.paths})
    else:
        trained = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        manifest = run_dir / MANIFEST_NAME
        if manifest.is_file():
            trained.data.split_file = str(manifest)
    # This run's own directory (the manifest copy goes there); the training run's data paths stay as they were.
    trained.paths.output_dir = cfg.paths.output_dir
    for key, value in cfg.data.items():
        if value is not None:
            trained.data[key] = value
    preset = module.preset  # the checkpoint decides how images are prepared
    trained.data.update({"preset": preset.name, "resize": preset.resize, "crop": preset.crop})
    trained.trainer = cfg.trainer
    return trained


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if cfg.split not in EVAL_SPLITS:
        raise ValueError(f"split={cfg.split!r}; expected one of {EVAL_SPLITS}.")
    ckpt = Path(cfg.ckpt_path)
    module = load_classifier(ckpt)
    trained = training_config(cfg, module, training_run_dir(ckpt))
    datamodule = prepared_datamodule(trained.data, "test")
    if datamodule.class_names != module.class_names:
        raise ValueError(
            f"The data at {datamodule.root} has {datamodule.num_classes} classes {datamodule.class_names[:5]}... "
            f"but the checkpoint was trained on {len(module.class_names)}: {module.class_names[:5]}..."
        )
    trainer = build_trainer(trained, callbacks=[], loggers=[])
    if cfg.split == "test":
        scores = trainer.test(module, dataloaders=datamodule.test_dataloader())
    else:
        scores = trainer.validate(module, dataloaders=datamodule.val_dataloader())
    result = {
        "checkpoint": str(ckpt),
        "split": cfg.split,
        "images": len(getattr(datamodule, f"{cfg.split}_dataset")),
        "metrics": numbers(scores[0]),
        "data": datamodule.summary(),
    }
    write_results(result, Path(cfg.paths.output_dir), stages=("metrics",))
    return result


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
