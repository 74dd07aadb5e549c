"""`python -m caltech_cam.train`: config composition, every backbone end to end, resume, multirun, CPU DDP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from caltech_cam.models import MODEL_SPECS
from caltech_cam.run.config import config_dir
from tests.helpers import compose_train, run_cli, run_dirs, tiny_overrides


# ------------------------------------------------------------------------------------------------ composition
def test_model_selects_its_preset_and_overrides_win():
    cfg = compose_train(["model=inception_v3"])
    assert cfg.data.preset == "inception"
    assert cfg.model.model_name == "inception_v3"
    cfg = compose_train(["model=resnet50"])
    assert cfg.data.preset == "resnet"
    cfg = compose_train(["model=inception_v3", "data.preset=resnet"])
    assert cfg.data.preset == "resnet"


def test_model_options_are_the_registered_models_and_share_the_classifier_settings():
    """`--help` lists the `model` group's files: only real models, no shared base among them."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        options = GlobalHydra.instance().config_loader().get_group_options("model", ObjectType.CONFIG)
    assert sorted(options) == sorted(MODEL_SPECS)
    for model in options:
        cfg = compose_train([f"model={model}", "model.label_smoothing=0.1", "model/optimizer=adamw"])
        assert cfg.model._target_ == "caltech_cam.models.ClassifierModule" and cfg.model.model_name == model
        assert cfg.model.label_smoothing == 0.1 and cfg.model.optimizer._target_ == "torch.optim.AdamW"
        assert cfg.model.freeze_backbone_epochs == 0  # the shared settings: ClassifierModule's own default


def test_demo_experiment_composes_for_both_models():
    cfg = compose_train(["experiment=demo"])
    assert cfg.data.root.endswith("synthetic")
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.model.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.data.resize == 64
    cfg = compose_train(["experiment=demo", "model=inception_v3"])
    # InceptionV3 needs >= 75 px: the demo takes the model's small input.
    assert cfg.data.crop >= 75


@pytest.mark.parametrize(
    ("experiment", "model", "preset", "crop"),
    [
        ("seed_resnet50", "resnet50", "resnet", None),
        ("seed_inception_v3", "inception_v3", "inception", 224),
    ],
)
def test_seed_experiments_reproduce_the_study(experiment, model, preset, crop):
    cfg = compose_train([f"experiment={experiment}"])
    assert cfg.model.model_name == model and cfg.model.pretrained
    assert cfg.data.preset == preset and cfg.data.resize == 256 and cfg.data.crop == crop
    assert list(cfg.data.split.fractions) == [0.7, 0.15, 0.15]
    assert cfg.data.synthetic is None


def _without_model(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.startswith("model=")]


@pytest.mark.slow
@pytest.mark.parametrize("override", ["model=vgg16", "model.model_name=vgg16"])
def test_unknown_model_is_refused_with_the_allowed_names(tmp_path, synthetic_root, override):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "caltech_cam.train",
            *_without_model(tiny_overrides(synthetic_root, tmp_path)),
            override,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "vgg16" in proc.stderr and "resnet50" in proc.stderr and "inception_v3" in proc.stderr
    assert not list(tmp_path.rglob("*.ckpt")), "refused before anything trained"


def test_num_classes_disagreeing_with_data_is_an_error(tmp_path, synthetic_root):
    from caltech_cam.train import train

    cfg = compose_train(
        [*tiny_overrides(synthetic_root, tmp_path), "model.num_classes=257", "+trainer.fast_dev_run=1"]
    )
    cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=r"num_classes=257.*disagrees"):
        train(cfg)


def test_preset_the_model_cannot_take_is_an_error(tmp_path, synthetic_root):
    from caltech_cam.train import train

    # resnet50's RGB stem cannot take the 1-channel inception preset; the check runs before any data is read.
    cfg = compose_train(
        [*tiny_overrides(synthetic_root, tmp_path), "data.preset=inception", "data.root=/nonexistent"]
    )
    cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=r"resnet50.*cannot take preset 'inception'.*\['resnet'\]"):
        train(cfg)


# ------------------------------------------------------------------------------------------------ fast_dev_run
@pytest.mark.parametrize("model", ["resnet50", "inception_v3", "my_resnet50", "my_inception_v3"])
def test_fast_dev_run_every_model(tmp_path, synthetic_root, model):
    from caltech_cam.train import train

    cfg = compose_train([*tiny_overrides(synthetic_root, tmp_path, model), "debug=fdr", "logger=none"])
    cfg.paths.output_dir = str(tmp_path / "run")
    results = train(cfg)
    assert torch.isfinite(torch.tensor(results["fit"]["train/loss"]))
    assert (tmp_path / "run" / "metrics.json").is_file()


# ------------------------------------------------------------------------------------------------ end to end
def by_hand_test_scores(run: Path, ckpt: Path) -> dict[str, float]:
    """Top-1 and mean per-class accuracy of `ckpt` on `run`'s test split (its manifest), from the logits."""
    from caltech_cam.data import MANIFEST_NAME
    from caltech_cam.models.checkpoints import load_classifier
    from caltech_cam.run.build import prepared_datamodule

    trained = OmegaConf.load(run / ".hydra" / "config.yaml")
    trained.data.split_file = str(run / MANIFEST_NAME)
    trained.paths.output_dir = str(run / "recheck")
    module = load_classifier(ckpt)
    with torch.no_grad():
        batches = [(module(x), y) for x, y in prepared_datamodule(trained.data).test_dataloader()]
    predicted = torch.cat([logits.argmax(dim=1) for logits, _ in batches])
    labels = torch.cat([y for _, y in batches])
    hits = (predicted == labels).float()
    per_class = [hits[labels == c].mean() for c in labels.unique()]
    return {"test/acc_top1": float(hits.mean()), "test/acc_mean_class": float(torch.stack(per_class).mean())}


@pytest.mark.slow
def test_demo_like_run_writes_metrics_checkpoint_and_events(tmp_path, synthetic_root):
    proc = run_cli([*tiny_overrides(synthetic_root, tmp_path), "trainer.max_epochs=2"], cwd=tmp_path)
    (run,) = run_dirs(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["optimized_metric"] == "val/acc_top1"
    assert "val/acc_top1" in proc.stdout
    # The last line says how to look at the pictures.
    assert proc.stdout.strip().splitlines()[-1] == f"Pictures and curves: tensorboard --logdir {run}"
    best = Path(metrics["best_checkpoint"])
    assert best.is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    # plain values only: loads with weights_only=True
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["model_name"] == "resnet50"
    assert ckpt["hyper_parameters"]["num_classes"] == metrics["data"]["classes"]
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("train/loss", "val/acc_top1", "val/acc_top5", "val/acc_mean_class", "test/acc_top1"):
        assert tag in scalars, f"{tag} missing from {scalars}"
    assert len(events.Scalars("val/acc_top1")) == 2
    assert "gradcam/overview" in events.Tags()["images"]
    # The test numbers, recomputed from the best checkpoint's logits on the run's test split.
    assert by_hand_test_scores(run, best) == pytest.approx(
        {k: metrics["test"][k] for k in ("test/acc_top1", "test/acc_mean_class")}, abs=1e-6
    )

    # evaluate: the same checkpoint on the same (reused) split gives the same test numbers
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "caltech_cam.evaluate",
            f"ckpt_path={best}",
            "trainer=cpu",
            f"paths.root_dir={tmp_path}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (evaluation,) = run_dirs(tmp_path, "evaluate")
    scored = json.loads((evaluation / "metrics.json").read_text())
    assert scored["images"] == metrics["data"]["splits"]["test"]
    for key in ("test/acc_top1", "test/acc_top5", "test/acc_mean_class"):
        assert scored["metrics"][key] == pytest.approx(metrics["test"][key], abs=1e-6)


@pytest.mark.slow
def test_demo_experiment_end_to_end_reduced(tmp_path, synthetic_root):
    """`experiment=demo` as the README runs it, on the small shared synthetic set and one epoch."""
    proc = run_cli(
        [
            "experiment=demo",
            f"data.root={synthetic_root}",
            f"paths.root_dir={tmp_path}",
            "trainer.max_epochs=1",
            "data.num_workers=0",
            "callbacks.grad_cam.num_images=4",
            "callbacks.grad_cam.strict=true",
        ],
        cwd=tmp_path,
    )
    (run,) = run_dirs(tmp_path, "demo")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["classes"] == 4 and metrics["model"] == "resnet50"
    assert f"{metrics['fit']['val/acc_top1']:.4f}" in proc.stdout
    assert Path(metrics["best_checkpoint"]).is_file()


@pytest.mark.slow
def test_resume_from_last_checkpoint_continues_the_epoch_count(tmp_path, synthetic_root):
    base = [*tiny_overrides(synthetic_root, tmp_path), "test=false", "callbacks.grad_cam.enabled=false"]
    run_cli([*base, "trainer.max_epochs=1"], cwd=tmp_path)
    (first,) = run_dirs(tmp_path)
    last = first / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0
    run_cli(
        [*base, "trainer.max_epochs=2", f"ckpt_path={last}", "hydra.run.dir=" + str(tmp_path / "resumed")],
        cwd=tmp_path,
    )
    resumed = torch.load(
        tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert resumed["epoch"] == 1
    assert resumed["global_step"] > torch.load(last, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow
def test_multirun_gives_each_job_its_own_directory(tmp_path, synthetic_root):
    overrides = [
        o for o in tiny_overrides(synthetic_root, tmp_path) if not o.startswith(("model=", "data.resize"))
    ]
    run_cli(
        ["-m", "model=resnet50,my_inception_v3", "data.resize=80", *overrides, "debug=fdr"],
        cwd=tmp_path,
    )
    jobs = sorted(p.parent for p in (tmp_path / "outputs" / "train" / "multiruns").glob("*/*/metrics.json"))
    assert len(jobs) == 2
    chosen = sorted(json.loads((j / "metrics.json").read_text())["model"] for j in jobs)
    assert chosen == ["my_inception_v3", "resnet50"]


@pytest.mark.slow
def test_two_process_cpu_ddp_runs_several_epochs(tmp_path, synthetic_root):
    run_cli(
        [*tiny_overrides(synthetic_root, tmp_path), "trainer=ddp_cpu", "trainer.max_epochs=2", "test=false"],
        cwd=tmp_path,
    )
    (run,) = run_dirs(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "val/acc_top1" in metrics["fit"]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    # The value returned to sweepers is the best epoch's, not the last one's (the spawn launcher does not send the
    # best score back to the main process): the maximum of the val/acc_top1 points TensorBoard holds.
    scores = []
    for file in (run / "tensorboard").rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(file), size_guidance={"scalars": 0})
        events.Reload()
        if "val/acc_top1" in events.Tags()["scalars"]:
            scores += [e.value for e in events.Scalars("val/acc_top1")]
    assert len(scores) == 2
    assert metrics["optimized_value"] == pytest.approx(max(scores))
