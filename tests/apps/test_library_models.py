"""`train`, `evaluate` and `explain` on a library model (model=torchvision), as the demo runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import run_cli, run_dirs


def _run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_demo_with_a_torchvision_model_trains_explains_and_evaluates(tmp_path, synthetic_root):
    run_cli(
        [
            "experiment=demo",
            "model=torchvision",
            "model.arch=mobilenet_v3_small",
            "trainer.max_epochs=1",
            f"data.root={synthetic_root}",
            f"paths.root_dir={tmp_path}",
            "data.num_workers=0",
            "callbacks.grad_cam.num_images=4",
            "callbacks.grad_cam.strict=true",
        ],
        cwd=tmp_path,
    )
    (run,) = run_dirs(tmp_path, "demo")
    stages = ["features.0", "features.1", "features.3", "features.8", "features.12"]
    assert f"CAM layers {stages}" in (run / "demo.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == "torchvision" and "test/acc_top1" in metrics["test"]
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {f"gradcam/{layer}" for layer in stages} <= set(events.Tags()["images"])

    best = metrics["best_checkpoint"]
    _run(
        "caltech_cam.evaluate", f"ckpt_path={best}", "trainer=cpu", f"paths.root_dir={tmp_path}", cwd=tmp_path
    )
    (evaluation,) = run_dirs(tmp_path, "evaluate")
    scored = json.loads((evaluation / "metrics.json").read_text())
    assert scored["metrics"]["test/acc_top1"] == pytest.approx(metrics["test"]["test/acc_top1"], abs=1e-6)

    image = next(Path(synthetic_root).rglob("*.jpg"))
    out = tmp_path / "explained"
    _run("caltech_cam.explain", f"ckpt_path={best}", f"images=[{image}]", f"out_dir={out}", cwd=tmp_path)
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["layers"] == stages
