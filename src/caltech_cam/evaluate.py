"""`python -m caltech_cam.evaluate ckpt_path=...`: score a checkpoint on its run's test (or val) split."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from caltech_cam.config import config_dir
from caltech_cam.data import MANIFEST_NAME, CaltechDataModule
from caltech_cam.module import ClassifierModule, load_classifier

log = logging.getLogger(__name__)

SPLITS = ("test", "val")


def training_run_dir(ckpt_path: Path) -> Path | None:
    """`<run dir>` for `<run dir>/checkpoints/x.ckpt` when it holds the run's Hydra config."""
    run = ckpt_path.resolve().parent.parent
    return run if (run / ".hydra" / "config.yaml").is_file() else None


def data_config(cfg: DictConfig, module: ClassifierModule, run_dir: Path | None) -> dict[str, Any]:
    """The training run's `data` settings with the checkpoint's preset, its split manifest and the overrides."""
    if run_dir is None:
        if cfg.data.root is None:
            raise ValueError(
                f"No training config next to {cfg.ckpt_path} (expected <run dir>/.hydra/config.yaml); "
                "pass data.root=<Caltech-layout folder> (and data.split_file=<split_manifest.csv> to reuse a split)."
            )
        base = OmegaConf.load(config_dir() / "data" / "caltech256.yaml")
        base.pop("defaults", None)
        trained = OmegaConf.create({"data": base, "seed": cfg.seed, "model": {"preset": module.preset.name}})
    else:
        trained = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        manifest = run_dir / MANIFEST_NAME
        if cfg.data.split_file is None and manifest.is_file():
            trained.data.split_file = str(manifest)
    trained.paths = cfg.paths  # this run's directories (the manifest copy and caches go there)
    for key, value in cfg.data.items():
        if value is not None:
            trained.data[key] = value
    preset = module.preset  # the checkpoint decides how images are prepared
    trained.data.update(
        {
            "preset": preset.name,
            "resize": preset.resize,
            "crop": preset.crop,
            "output_dir": cfg.paths.output_dir,
        }
    )
    return OmegaConf.to_container(trained.data, resolve=True)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if cfg.split not in SPLITS:
        raise ValueError(f"split={cfg.split!r}; expected one of {SPLITS}.")
    ckpt = Path(cfg.ckpt_path)
    module = load_classifier(ckpt)
    run_dir = training_run_dir(ckpt)
    datamodule = CaltechDataModule(**data_config(cfg, module, run_dir))
    datamodule.prepare_data()
    datamodule.setup("test")
    if datamodule.class_names != module.class_names:
        raise ValueError(
            f"The data at {datamodule.root} has classes {datamodule.class_names[:5]}... "
            f"({datamodule.num_classes}) but the checkpoint was trained on {module.class_names[:5]}... "
            f"({len(module.class_names)})."
        )
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    if cfg.split == "test":
        scores = trainer.test(module, dataloaders=datamodule.test_dataloader())[0]
    else:
        scores = trainer.validate(module, dataloaders=datamodule.val_dataloader())[0]
    result = {
        "checkpoint": str(ckpt),
        "split": cfg.split,
        "images": len(getattr(datamodule, f"{cfg.split}_dataset")),
        "metrics": {k: float(v) for k, v in sorted(scores.items())},
        "data": datamodule.summary(),
    }
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"{cfg.split} split of {datamodule.root}: {result['images']} images")
    for key, value in result["metrics"].items():
        print(f"  {key:<22} {value:.4f}")
    return result


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
