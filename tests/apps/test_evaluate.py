"""`caltech_cam.evaluate` in process: a checkpoint without its run directory scored on data.root, by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from caltech_cam.data import index_root
from caltech_cam.evaluate import EVAL_SPLITS, evaluate, training_config
from caltech_cam.models.checkpoints import load_classifier
from caltech_cam.run.build import prepared_datamodule
from caltech_cam.run.config import config_dir
from tests.helpers import one_step_checkpoint


def compose_evaluate(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


@pytest.fixture(scope="module")
def lone_checkpoint(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path, one_thread) -> Path:
    """A my_inception_v3 checkpoint for the shared synthetic set's classes, outside any run directory."""
    names = index_root(synthetic_root).class_names
    return one_step_checkpoint(
        tmp_path_factory.mktemp("lone") / "model.ckpt",
        "my_inception_v3",
        names,
        {"name": "inception", "resize": 40},
        torch.randn(8, 1, 35, 35),
        torch.arange(8) % len(names),
        batch_size=4,
    )


def test_checkpoint_without_run_dir_uses_the_caltech256_data_settings(
    lone_checkpoint: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    overrides = [
        f"ckpt_path={lone_checkpoint}",
        f"data.root={synthetic_root}",
        "data.num_workers=0",
        "trainer=cpu",
        f"paths.root_dir={tmp_path}",
    ]
    cfg = compose_evaluate(overrides)
    cfg.paths.output_dir = str(tmp_path / "run")
    # conf/data/caltech256.yaml composed by evaluate.yaml (no file read at run time), the checkpoint's preset on it.
    trained = training_config(cfg, load_classifier(lone_checkpoint), run_dir=None)
    assert list(trained.data.split.fractions) == [0.7, 0.15, 0.15] and trained.data.seed == cfg.seed == 42
    assert (trained.data.preset, trained.data.resize, trained.data.crop) == ("inception", 40, 35)

    result = evaluate(cfg)
    datamodule = prepared_datamodule(trained.data)
    module = load_classifier(lone_checkpoint)
    with torch.no_grad():
        pairs = [(module(x).argmax(dim=1), y) for x, y in datamodule.test_dataloader()]
    hits = torch.cat([p == y for p, y in pairs]).float()
    assert result["images"] == len(hits) == len(datamodule.test_dataset)
    assert result["metrics"]["test/acc_top1"] == pytest.approx(float(hits.mean()), abs=1e-6)


def test_unknown_split_is_refused_before_loading(tmp_path: Path) -> None:
    cfg = compose_evaluate([f"ckpt_path={tmp_path / 'missing.ckpt'}", "split=train"])
    with pytest.raises(ValueError, match=re.escape(f"split='train'; expected one of {EVAL_SPLITS}")):
        evaluate(cfg)


def test_scoring_data_keys_override_the_run_and_the_others_get_a_sentence(
    lone_checkpoint: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    base = [
        f"ckpt_path={lone_checkpoint}",
        f"data.root={synthetic_root}",
        "trainer=cpu",
        f"paths.root_dir={tmp_path}",
    ]
    module = load_classifier(lone_checkpoint)
    # Every key a scoring run may change composes (no "Could not override 'data.cache'") and reaches the data.
    overrides = {
        "cache": "uint8",
        "num_workers": 0,
        "batch_size": 3,
        "bad_images": "skip",
        "cache_dir": str(tmp_path / "cache"),
        "split_file": str(tmp_path / "split.csv"),
        "pin_memory": False,
        "persistent_workers": False,
        "prefetch_factor": 4,
    }
    cfg = compose_evaluate([*base, *(f"data.{k}={v}" for k, v in overrides.items())])
    cfg.paths.output_dir = str(tmp_path / "run")
    trained = training_config(cfg, module, run_dir=None)
    assert {k: trained.data[k] for k in overrides} == overrides
    # The checkpoint and its run decide the rest: a sentence naming the key and why, not Hydra's message.
    for key, value, why in (
        ("resize", 64, "the checkpoint's preset decides the input size"),
        ("split.mode", "per_class", "split_manifest.csv decides which images are scored"),
        ("hflip", True, "training-only augmentation"),
    ):
        cfg = compose_evaluate([*base, f"+data.{key}={value}" if "." in key else f"data.{key}={value}"])
        cfg.paths.output_dir = str(tmp_path / "run")
        with pytest.raises(ValueError, match=re.escape(f"data.{key.split('.')[0]}=") + ".*" + re.escape(why)):
            training_config(cfg, module, run_dir=None)
