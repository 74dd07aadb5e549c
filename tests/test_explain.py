"""`python -m caltech_cam.explain` as a user runs it: real JPEG/PNG files, a checkpoint, PNG grids and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from caltech_cam.data.decode import load_rgb
from caltech_cam.module import ClassifierModule, load_classifier

CLASSES = ["ak47", "dog", "spider"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint from a one-step fit (ResNet50, random weights, 64 px) and a folder of JPEG and PNG files."""
    root = tmp_path_factory.mktemp("explain")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        module = ClassifierModule("resnet50", 3, CLASSES, preset={"name": "resnet", "resize": 64})
        data = TensorDataset(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0]))
        trainer = L.Trainer(
            max_epochs=1,
            limit_train_batches=1,
            limit_val_batches=0,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, DataLoader(data, batch_size=2))
        trainer.save_checkpoint(root / "model.ckpt", weights_only=True)
    finally:
        torch.set_num_threads(threads)
    pictures = root / "pictures"
    (pictures / "nested").mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    # Smooth pictures (not noise) so JPEG keeps them recognisable; different sizes and aspect ratios.
    for name, (h, w) in {"cat.jpg": (120, 90), "nested/boat.png": (70, 100)}.items():
        base = torch.rand(3, h // 10, w // 10, generator=generator)
        image = (torch.nn.functional.interpolate(base[None], size=(h, w), mode="bilinear")[0] * 255).to(
            torch.uint8
        )
        writer = torchvision.io.write_jpeg if name.endswith(".jpg") else torchvision.io.write_png
        writer(image, str(pictures / name))
    torchvision.io.write_jpeg(torch.full((1, 40, 50), 128, dtype=torch.uint8), str(root / "gray.jpg"))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not really a JPEG")
    return root


def run_explain(root: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "caltech_cam.explain", f"hydra.run.dir={root / 'hydra'}", *overrides]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_explain_writes_grids_and_top5_predictions(workspace):
    out = workspace / "out"
    done = run_explain(
        workspace,
        f"ckpt_path={workspace / 'model.ckpt'}",
        "images=[pictures,gray.jpg]",
        "method=layercam",
        "layers=[layer3,layer4]",
        f"out_dir={out}",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["method"] == "layercam" and summary["layers"] == ["layer3", "layer4"]
    expected_images = ["pictures/cat.jpg", "pictures/nested/boat.png", "gray.jpg"]
    assert [r["image"] for r in summary["images"]] == expected_images

    # The oracle: the same checkpoint and preset, in this process, image by image.
    module = load_classifier(workspace / "model.ckpt")
    transform = module.preset.transform(train=False)
    for record in summary["images"]:
        with torch.no_grad():
            probabilities = module(transform(load_rgb(workspace / record["image"]))[None]).softmax(dim=1)[0]
        top = record["top5"]
        assert len(top) == 3  # top-5 of a 3-class model
        assert sorted(t["class"] for t in top) == [0, 1, 2]
        assert [t["name"] for t in top] == [CLASSES[t["class"]] for t in top]
        for t in top:
            assert t["probability"] == pytest.approx(probabilities[t["class"]].item(), rel=1e-4, abs=1e-6)
        assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
        grid = torchvision.io.read_image(record["grid"])
        # A figure of 1 row x 3 columns (input, layer3, layer4): wider than tall, and not blank.
        assert grid.shape[0] in (3, 4) and grid.shape[2] > 2 * grid.shape[1] and grid.float().std() > 10
    assert sorted(p.name for p in out.glob("*.png")) == [
        "0000_cat_layercam.png",
        "0001_boat_layercam.png",
        "0002_gray_layercam.png",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("images", "message"),
    [
        ("images=[pictures,missing.jpg]", "image path not found: missing.jpg"),
        ("images=[pictures,broken.jpg]", "bad image broken.jpg"),
    ],
)
def test_explain_stops_on_a_bad_image_naming_it(workspace, images, message):
    out = workspace / "never"
    done = run_explain(workspace, f"ckpt_path={workspace / 'model.ckpt'}", images, f"out_dir={out}")
    assert done.returncode != 0
    assert message in done.stderr
    assert not out.exists()  # nothing written before the inputs were checked
