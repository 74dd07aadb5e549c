"""`python -m caltech_cam.evaluate ckpt_path=... [cams=default]`: score a checkpoint on its run's test (or val) split.

Always: the Lightning metrics, per-class accuracy, the most-confused pairs and the confusion matrix (from the same
pass, `reports.LogitCollector`). With `cams=default`: CAM methods x layers scored by `cam.scoring.score_cams`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter

from caltech_cam.callbacks.logits import LogitCollector
from caltech_cam.cam.engine import check_layers
from caltech_cam.cam.metrics.localization import map_boxes
from caltech_cam.cam.scoring import BoxSet, CamScores, ScoringSpec, score_cams, select_images
from caltech_cam.data import MANIFEST_NAME
from caltech_cam.data.presets import PRESET_NAMES
from caltech_cam.models import ClassifierModule, load_classifier
from caltech_cam.run.build import build_trainer, prepared_datamodule
from caltech_cam.run.config import config_dir, register_resolvers
from caltech_cam.run.reports import class_report, write_cam_scores, write_classification
from caltech_cam.run.results import numbers, training_run_dir, write_results
from caltech_cam.utils.devices import resolve_device

log = logging.getLogger(__name__)

# The splits a checkpoint can be scored on (data.splits.SPLITS are the three a split makes).
EVAL_SPLITS = ("test", "val")
# The data keys evaluate.yaml lists that the checkpoint or its training run decide; setting one gets this sentence
# (every other key of evaluate.yaml's `data:` overrides the training run's value).
_MANIFEST = "the training run's split_manifest.csv decides which images are scored (pass data.split_file=...)"
FIXED_BY_THE_RUN = {
    "preset": "the checkpoint's preset decides how images are prepared",
    "resize": "the checkpoint's preset decides the input size",
    "crop": "the checkpoint's preset decides the input size",
    "random_resized_crop": "it is training-only augmentation; evaluation uses the preset's centre crop",
    "hflip": "it is training-only augmentation",
    "split": _MANIFEST,
    "near_duplicates": _MANIFEST,
    "seed": _MANIFEST,
    "synthetic": "the checkpoint's data already exists (data.root=... points elsewhere)",
    "layout": "the training run's dataset decides how its folder is read (data.root=... points elsewhere)",
    "download": "fetch the archive first with python -m caltech_cam.prepare data.download=true",
    "output_dir": "evaluate writes into its own run directory (hydra.run.dir=...)",
}


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
        if value is None:
            continue
        if key in FIXED_BY_THE_RUN:
            raise ValueError(f"data.{key}={value!r} cannot apply to evaluate: {FIXED_BY_THE_RUN[key]}")
        trained.data[key] = value
    preset = module.preset  # the checkpoint decides how images are prepared
    trained.data.update({"resize": preset.resize, "crop": preset.crop})
    if preset.name in PRESET_NAMES:  # a library model's own preset replaces the data's (prepared_datamodule)
        trained.data.preset = preset.name
    trained.trainer = cfg.trainer
    return trained


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if cfg.split not in EVAL_SPLITS:
        raise ValueError(f"split={cfg.split!r}; expected one of {EVAL_SPLITS}.")
    ckpt = Path(cfg.ckpt_path)
    module = load_classifier(ckpt)
    trained = training_config(cfg, module, training_run_dir(ckpt))
    own = None if module.preset.name in PRESET_NAMES else module.preset
    datamodule = prepared_datamodule(trained.data, "test", preset=own)
    if datamodule.class_names != module.class_names:
        raise ValueError(
            f"The data at {datamodule.root} has {datamodule.num_classes} classes {datamodule.class_names[:5]}... "
            f"but the checkpoint was trained on {len(module.class_names)}: {module.class_names[:5]}..."
        )
    dataset = getattr(datamodule, f"{cfg.split}_dataset")
    # Every CAM setting is checked (boxes file included) before the split is run.
    plan = cam_plan(cfg.cams, module, datamodule, dataset, cfg.split) if cfg.get("cams") else None
    collector = LogitCollector()
    trainer = build_trainer(trained, callbacks=[collector], loggers=[])
    # datamodule=, not its loaders: its on_after_batch_transfer finishes data.cache=uint8 batches on the device.
    if cfg.split == "test":
        scores = trainer.test(module, datamodule=datamodule)
    else:
        scores = trainer.validate(module, datamodule=datamodule)
    output_dir = Path(cfg.paths.output_dir)
    result = {
        "checkpoint": str(ckpt),
        "split": cfg.split,
        "images": len(dataset),
        "metrics": numbers(scores[0]),
        "data": datamodule.summary(),
    }
    if trainer.is_global_zero:
        write_reports(result, collector, module, trainer.world_size, output_dir)
    if plan is not None and trainer.is_global_zero:
        cams = run_cams(plan, module, datamodule)
        tables = write_cam_scores(
            cams,
            output_dir,
            output_dir / "tensorboard",
            {
                "split": cfg.split,
                "target": plan["spec"].target,
                "images": len(plan["indices"]),
                "checkpoint": ckpt.name,
            },
        )
        print(tables, flush=True)
        result["cams"] = {"file": str(output_dir / "cam_scores.json"), "notes": cams.notes}
    write_results(result, output_dir, stages=("metrics",))
    return result


def write_reports(
    result: dict[str, Any],
    collector: LogitCollector,
    module: ClassifierModule,
    processes: int,
    output_dir: Path,
) -> None:
    """The classification reports of the pass `collector` saw, into `output_dir` and its tensorboard/."""
    if processes > 1:
        log.warning(
            "Classification reports skipped: they need every image's logits in one process (trainer.devices=1); "
            "this run has %d processes.",
            processes,
        )
        return
    logits, labels = collector.collected()
    with SummaryWriter(log_dir=str(output_dir / "tensorboard")) as writer:
        result["classification"] = write_classification(
            class_report(logits, labels, module.class_names), output_dir, writer
        )


def cam_plan(
    cams: DictConfig, module: ClassifierModule, datamodule: Any, dataset: Any, split: str
) -> dict[str, Any]:
    """`cams.*` checked against the module and the split (methods, layers, metrics, target, N, boxes) into a
    `ScoringSpec`, with the chosen image indices and their boxes in model-input pixels."""
    layers, _ = check_layers(module.model, _names(cams.layers) or list(module.cam_layers), module.cam_layers)
    spec = ScoringSpec(
        layers=layers,
        methods=None if cams.methods is None else _names(cams.methods),
        target=cams.target,
        metrics=None if cams.metrics is None else _names(cams.metrics),
        tolerance=cams.tolerance,
        sanity_images=cams.sanity_images,
        seed=int(cams.seed),
        resamples=cams.resamples,
    )
    indices, note = select_images(
        len(dataset), cams.num_images, int(cams.seed), what=f"the {split} split", key="cams.num_images"
    )
    if note:
        log.info(note)
    boxes = None
    if "localization" in spec.metrics:
        if not hasattr(dataset, "paths"):
            raise TypeError(
                f"the {split} dataset ({type(dataset).__name__}) has no .paths to look its boxes up by"
            )
        found = datamodule.boxes_for(dataset.paths)
        if found is not None:
            chosen = found.subset(indices)
            mapped, kept = map_boxes(chosen, module.preset)
            boxes = BoxSet(mapped, kept, chosen.present)
    return {
        "spec": spec,
        "indices": indices,
        "boxes": boxes,
        "dataset": dataset,
        "device": resolve_device(cams.device, "cams.device"),
        "batch_size": cams.batch_size,
    }


def _names(value: Any) -> list[str]:
    """A config list of names; a single name (`cams.layers=layer4`) is a list of one, not of its letters."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def run_cams(plan: dict[str, Any], module: ClassifierModule, datamodule: Any) -> CamScores:
    """Score the plan's images in chunks on `cams.device`, each chunk finished by the datamodule for the model."""
    device = plan["device"]
    model = module.model.to(device).eval()
    loader = DataLoader(
        Subset(plan["dataset"], plan["indices"].tolist()),
        batch_size=int(plan["batch_size"] or datamodule.batch_size),
        shuffle=False,
        num_workers=datamodule.num_workers,
    )
    finish = getattr(datamodule, "finish_batch", None)

    def batches():
        for images, labels in loader:
            images = images.to(device)
            yield (finish(images, train=False) if finish is not None else images), labels

    return score_cams(model, batches(), plan["spec"], plan["boxes"])


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
