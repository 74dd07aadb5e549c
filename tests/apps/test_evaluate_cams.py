"""`evaluate`'s reports: classification (per-class accuracy, confused pairs, confusion matrix) and `cams=default`
(CAM scores as Markdown, JSON, CSV and TensorBoard), through the real CLI, plus its bad-input errors."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from caltech_cam.data import index_root
from caltech_cam.evaluate import evaluate, training_config
from caltech_cam.models.checkpoints import load_classifier
from caltech_cam.run.build import prepared_datamodule
from caltech_cam.run.config import config_dir
from caltech_cam.run.reports import class_report
from tests.helpers import one_step_checkpoint, run_dirs

METHODS = ["gradcam", "eigencam"]
LAYERS = ["layer3", "layer4"]


def test_class_report_by_hand() -> None:
    # 3 classes; rows: true 0, 0, 1, 1, 1, 2; argmax: 0, 1, 1, 0, 0, 1; class 2's second-best is class 2.
    logits = torch.tensor(
        [[3.0, 1, 0], [0, 2, 1], [0, 5, 1], [4, 0, 1], [2, 1, 0], [0, 3, 2]],
    )
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    report = class_report(logits, labels, ["a", "b", "c"])
    assert report.confusion.tolist() == [[1, 1, 0], [2, 1, 0], [0, 1, 0]]
    assert report.per_class() == [
        {"class": "a", "n": 2, "correct": 1, "accuracy": 0.5},
        {"class": "b", "n": 3, "correct": 1, "accuracy": 1 / 3},
        {"class": "c", "n": 1, "correct": 0, "accuracy": 0.0},
    ]
    assert report.confused_pairs() == [
        {"true": "b", "predicted": "a", "count": 2, "share": 2 / 3},
        {"true": "a", "predicted": "b", "count": 1, "share": 0.5},
        {"true": "c", "predicted": "b", "count": 1, "share": 1.0},
    ]
    assert report.top1 == pytest.approx(2 / 6) and report.top5 == 1.0  # 3 classes: top-5 is every class
    empty = class_report(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), ["x", "y"])
    assert [row["accuracy"] for row in empty.per_class()] == [None, None]


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path, one_thread) -> Path:
    names = index_root(synthetic_root).class_names
    return one_step_checkpoint(
        tmp_path_factory.mktemp("cams") / "model.ckpt",
        "resnet50",
        names,
        {"name": "resnet", "resize": 64},
        torch.randn(8, 3, 64, 64),
        torch.arange(8) % len(names),
        batch_size=4,
    )


def _args(ckpt: Path, root: Path, tmp_path: Path) -> list[str]:
    return [
        f"ckpt_path={ckpt}",
        f"data.root={root}",
        "data.num_workers=0",
        "trainer=cpu",
        f"paths.root_dir={tmp_path}",
    ]


@pytest.mark.slow
def test_cli_writes_scores_and_classification_reports(
    resnet_checkpoint: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    cams = [
        "cams=default",
        f"cams.methods=[{','.join(METHODS)}]",
        f"cams.layers=[{','.join(LAYERS)}]",
        "cams.num_images=4",
        # deletion/insertion are checked against direct calls in tests/cam/test_scoring.py; here the rest.
        "cams.metrics=[localization,confidence,road,sanity]",
        "cams.sanity_images=2",
        "cams.resamples=200",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "caltech_cam.evaluate",
            *_args(resnet_checkpoint, synthetic_root, tmp_path),
            *cams,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run,) = run_dirs(tmp_path, "evaluate")
    # Strict JSON: a NaN (a column no image applies to) must be written as null.
    scores = json.loads(
        (run / "cam_scores.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}")
    )
    rows = {(r["layer"], r["method"], r["metric"]): r for r in scores["rows"]}
    # Markdown: one table per layer, rows = methods then baselines, mean [CI] cells.
    for layer in LAYERS:
        assert f"### {layer}" in proc.stdout
        row = rows[(layer, "gradcam", "road")]
        assert "| gradcam | " in proc.stdout
        assert f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in proc.stdout
        for method in [*METHODS, "uniform", "centre"]:
            assert (
                rows[(layer, method, "pointing_game")]["n"]
                + rows[(layer, method, "pointing_game")]["excluded"]
                == 4
            )
            assert rows[(layer, method, "average_drop")]["n"] == 4
            assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    # Eigen-CAM ignores everything above its layer: flagged, rho exactly 1 (an identity of the cascade).
    assert scores["sanity"]["eigencam"]["layer3"]["flagged"] is True
    assert rows[("layer3", "eigencam", "sanity_spearman")]["mean"] == pytest.approx(1.0)
    assert "eigencam (sanity: flagged)" in proc.stdout
    assert list(scores["sanity"]["gradcam"]["layer4"]["cascade"])[:2] == ["fc", "layer4"]
    assert any(note.startswith("localization: ") for note in scores["notes"])
    assert {"average_drop", "increase_in_confidence", "road_morf", "road_lerf", "road"} <= {
        metric for _, _, metric in rows
    }
    # CSV: the same numbers as the JSON.
    with (run / "cam_scores.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(scores["rows"])
    first = table[0]
    assert float(first["mean"]) == pytest.approx(scores["rows"][0]["mean"]) and "runtime_s" in first
    # TensorBoard: one run per layer x method with hparams and scalars; the confusion matrix as an image.
    session = EventAccumulator(str(run / "tensorboard" / "cams" / "layer3" / "gradcam"))
    session.Reload()
    assert session.Scalars("cams/road")[0].value == pytest.approx(rows[("layer3", "gradcam", "road")]["mean"])
    hparams = session.PluginTagToContent("hparams")
    assert any(b"gradcam" in content for content in hparams.values())
    top = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    top.Reload()
    assert "classification/confusion_matrix" in top.Tags()["images"]

    # Classification reports against a hand count of the checkpoint's predictions on the same split.
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classification"]["acc_top1"] == pytest.approx(
        metrics["metrics"]["test/acc_top1"], abs=1e-6
    )
    assert metrics["classification"]["acc_top5"] == pytest.approx(
        metrics["metrics"]["test/acc_top5"], abs=1e-6
    )
    cfg = _compose([*_args(resnet_checkpoint, synthetic_root, tmp_path)])
    cfg.paths.output_dir = str(tmp_path / "hand")
    module = load_classifier(resnet_checkpoint)
    datamodule = prepared_datamodule(training_config(cfg, module, None).data)
    with torch.no_grad():
        pairs = [(module(x).argmax(dim=1), y) for x, y in datamodule.test_dataloader()]
    predicted, labels = torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])
    with (run / "per_class_accuracy.csv").open() as handle:
        per_class = list(csv.DictReader(handle))
    for k, row in enumerate(per_class):
        assert row["class"] == module.class_names[k]
        assert int(row["n"]) == int((labels == k).sum())
        assert int(row["correct"]) == int(((labels == k) & (predicted == k)).sum())
    with (run / "confused_pairs.csv").open() as handle:
        for row in csv.DictReader(handle):
            t, p = module.class_names.index(row["true"]), module.class_names.index(row["predicted"])
            assert int(row["count"]) == int(((labels == t) & (predicted == p)).sum()) > 0


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def _evaluate(ckpt: Path, root: Path, tmp_path: Path, *extra: str) -> None:
    cfg = _compose([*_args(ckpt, root, tmp_path), "cams=default", *extra])
    cfg.paths.output_dir = str(tmp_path / "run")
    evaluate(cfg)


def test_bad_cam_settings_fail_before_the_split_runs(
    resnet_checkpoint: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="unknown CAM method 'gradcan'; choose one of gradcam"):
        _evaluate(resnet_checkpoint, synthetic_root, tmp_path, "cams.methods=[gradcan]")
    with pytest.raises(
        ValueError, match=re.escape("unknown layer 'layer5'; the model's CAM layers are ['layer1'")
    ):
        _evaluate(resnet_checkpoint, synthetic_root, tmp_path, "cams.layers=layer5")  # one name, not a list
    with pytest.raises(ValueError, match=r"cams.num_images=500 but the test split has only \d+ images"):
        _evaluate(resnet_checkpoint, synthetic_root, tmp_path, "cams.num_images=500")
    with pytest.raises(ValueError, match=re.escape("cams.tolerance=-1; expected pixels >= 0")):
        _evaluate(resnet_checkpoint, synthetic_root, tmp_path, "cams.tolerance=-1")
    with pytest.raises(ValueError, match=re.escape("unknown CAM metric 'roads'; choose from localization")):
        _evaluate(resnet_checkpoint, synthetic_root, tmp_path, "cams.metrics=roads")
    assert not (tmp_path / "run" / "metrics.json").exists()  # refused before any work


def test_a_boxes_file_of_another_set_or_outside_its_images_is_refused(
    resnet_checkpoint: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    boxes = json.loads((root / "boxes.json").read_text())
    (root / "boxes.json").write_text(json.dumps({f"other/{k}": v for k, v in boxes.items()}))
    with pytest.raises(ValueError, match=r"boxes\.json .*does not match this set"):
        _evaluate(resnet_checkpoint, root, tmp_path)
    first = sorted(boxes)[0]
    (root / "boxes.json").write_text(json.dumps({**boxes, first: [0, 0, 10_000, 10]}))
    with pytest.raises(ValueError, match=re.escape(f"the box [0, 0, 10000, 10] of {first!r} is outside its")):
        _evaluate(resnet_checkpoint, root, tmp_path)


def test_scores_json_writes_non_finite_numbers_as_null():
    from caltech_cam.run.reports import _finite

    row = {"mean": float("nan"), "ci": (float("inf"), 0.5), "n": 0, "notes": ["x"]}
    assert _finite({"rows": [row]}) == {"rows": [{"mean": None, "ci": [None, 0.5], "n": 0, "notes": ["x"]}]}
