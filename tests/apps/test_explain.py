"""`python -m caltech_cam.explain` as a user runs it: real image files of every format the decoder reads, a
checkpoint, PNG grids and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from caltech_cam.cam import Explainer
from caltech_cam.data.decode import load_rgb
from caltech_cam.models.checkpoints import load_classifier
from tests.helpers import one_step_checkpoint

CLASSES = ["ak47", "dog", "spider"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint from a one-step fit (ResNet50, random weights, 64 px) and a folder of JPEG, PNG, GIF, WebP,
    BMP and TIFF files (the last four written by PIL) beside a text file."""
    root = tmp_path_factory.mktemp("explain")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_step_checkpoint(
            root / "model.ckpt",
            "resnet50",
            CLASSES,
            {"name": "resnet", "resize": 64},
            torch.randn(4, 3, 64, 64),
            torch.tensor([0, 1, 2, 0]),
            weights_only=True,
        )
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
    # The formats a folder search used to skip in silence; GIF in palette mode, TIFF 16-bit gray is too exotic.
    for name, mode in {"anim.gif": "P", "icon.bmp": "RGB", "photo.webp": "RGB", "scan.tif": "RGB"}.items():
        pixels = (torch.rand(3, 60, 80, generator=generator) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).convert(mode).save(pictures / name)
    (pictures / "notes.txt").write_text("not an image\n")
    torchvision.io.write_jpeg(torch.full((1, 40, 50), 128, dtype=torch.uint8), str(root / "gray.jpg"))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not really a JPEG")
    return root


def run_explain(root: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "caltech_cam.explain", f"hydra.run.dir={root / 'hydra'}", *overrides]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


EXPLAINED = [
    "pictures/anim.gif",
    "pictures/cat.jpg",
    "pictures/icon.bmp",
    "pictures/nested/boat.png",
    "pictures/photo.webp",
    "pictures/scan.tif",
    "gray.jpg",
]


@pytest.mark.slow
def test_explain_writes_grids_and_top5_predictions(workspace, one_thread):
    out = workspace / "out"
    done = run_explain(
        workspace,
        f"ckpt_path={workspace / 'model.ckpt'}",
        "images=[pictures,gray.jpg]",
        "method=LayerCAM",  # an alias: recorded and named by its canonical spelling
        "layers=[layer3,layer4]",
        f"out_dir={out}",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["method"] == "layercam" and summary["layers"] == ["layer3", "layer4"]
    assert [r["image"] for r in summary["images"]] == EXPLAINED
    # Every file in the folder is either explained or counted and named as left out.
    assert summary["left_out"] == ["pictures/notes.txt"]
    log = (workspace / "hydra" / "explain.log").read_text()
    assert (
        "left out 1 file(s) without an image suffix (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp): "
        in log
    )
    assert "pictures/notes.txt" in log
    assert (
        "7 image(s) explained with layercam" in done.stdout and "1 non-image file(s) left out" in done.stdout
    )

    # The oracles: the same checkpoint and preset, in this process, image by image.
    module = load_classifier(workspace / "model.ckpt")
    transform = module.preset.transform(train=False)
    explainer = Explainer.of(module, ["layer3", "layer4"], method="layercam")
    for record in summary["images"]:
        image = load_rgb(workspace / record["image"])
        with torch.no_grad():
            probabilities = module(transform(image)[None]).softmax(dim=1)[0]
        top = record["top5"]
        assert len(top) == 3  # top-5 of a 3-class model
        assert sorted(t["class"] for t in top) == [0, 1, 2]
        assert [t["name"] for t in top] == [CLASSES[t["class"]] for t in top]
        for t in top:
            assert t["probability"] == pytest.approx(probabilities[t["class"]].item(), rel=1e-4, abs=1e-6)
        assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
        grid = torchvision.io.read_image(record["grid"])
        # One row: the input as the model sees it (in colour), then layer3 and layer4, drawn by the explainer.
        backdrop = module.preset.eval_view(image)
        assert grid.shape[0] == 3 and grid.shape[2] == 2 + 3 * (backdrop.shape[2] + 2)
        size = backdrop.shape[1]
        assert any(
            torch.equal(grid[:, y : y + size, 2 : 2 + size], backdrop) for y in range(grid.shape[1] - size)
        )
        ours = explainer.explain_files([workspace / record["image"]]).grid()
        assert ours.shape == grid.shape
        # Another process (batched, not image by image) may round a map value across a colour step of the
        # colormap: neighbouring steps differ by a few levels, so count only pixels off by more than that.
        off = (ours.int() - grid.int()).abs().amax(dim=0) > 24
        assert off.float().mean() < 0.01
    assert sorted(p.name for p in out.glob("*.png")) == [
        f"{k:04d}_{Path(name).stem}_layercam.png" for k, name in enumerate(EXPLAINED)
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


def test_find_images_takes_every_decodable_suffix_and_names_the_rest(tmp_path):
    from caltech_cam.explain import find_images

    folder = tmp_path / "mixed"
    (folder / "deep").mkdir(parents=True)
    for name in ("a.TIFF", "deep/b.JPG", "c.webp"):
        Image.new("RGB", (8, 6), "red").save(
            folder / name, format=Image.registered_extensions()[Path(name).suffix.lower()]
        )
    (folder / "c.txt").write_text("x")
    (folder / ".DS_Store").write_bytes(b"\0")
    single = tmp_path / "listed.dat"  # a file given by name is taken whatever its suffix
    single.write_bytes(b"")
    found, left_out = find_images([folder, single])
    assert found == [folder / "a.TIFF", folder / "c.webp", folder / "deep" / "b.JPG", single]
    assert left_out == [folder / ".DS_Store", folder / "c.txt"]
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.md").write_text("x")
    with pytest.raises(
        FileNotFoundError, match=r"no images \(\.bmp, .*\.webp\) in folder .*text; it holds only readme\.md"
    ):
        find_images([tmp_path / "text"])
