"""Test helpers (not fixtures): images and Caltech trees with the real archive's quirks, tiny train configs,
the train CLI, a real one-step checkpoint, optional oracles."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from caltech_cam.run.config import config_dir, register_resolvers

# The shared synthetic set: 4 class folders (3 objects + clutter) x 12 images, sides 64-96 px.
SYNTHETIC_PARAMS = {"num_classes": 4, "images_per_class": 12, "seed": 0, "min_size": 64, "max_size": 96}


def require(module: str, extra: str = "dev") -> object:
    """`module` imported for a test that needs an optional package: skipped with the reason when it is missing,
    but a failure when CALTECH_CAM_CI=1 (CI installs the extra, so there a missing oracle must not go unseen)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed ({exc}); `pip install -e .[{extra}]` brings it"
        if os.environ.get("CALTECH_CAM_CI") == "1":
            pytest.fail(f"CALTECH_CAM_CI=1 and {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)


def jpeg_bytes(seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> bytes:
    """A distinct smooth-plus-noise picture (its seed makes its content, hence its hash, unique)."""
    rng = np.random.default_rng(seed)
    w, h = size
    xx = np.mgrid[0:h, 0:w][1]
    base = rng.uniform(30, 220, size=3)
    pixels = base + 30 * np.sin(xx[..., None] / rng.uniform(3, 9)) + rng.normal(0, 8, size=(h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


@dataclass(frozen=True)
class CaltechTree:
    """A tmp Caltech-256 layout: ``root`` is the parent, ``folder`` the ``256_ObjectCategories`` inside it.

    Classes (sorted): 001.ak47 (10 good), 056.dog (8 good incl. a grayscale and a CMYK JPEG, + a truncated
    JPEG, + the nested empty greg/vision309), 198.spider (8 good, 198_0008 a byte copy of 198_0001, + the
    non-image RENAME2), 257.clutter (6 good + a zero-byte .jpg). 34 image files, 2 bad, 32 usable.
    """

    root: Path
    folder: Path
    bad: tuple[str, ...] = ("056.dog/056_0009.jpg", "257.clutter/257_0007.jpg")
    duplicate: tuple[str, str] = ("198.spider/198_0001.jpg", "198.spider/198_0008.jpg")
    gray: str = "056.dog/056_0001.jpg"
    cmyk: str = "056.dog/056_0002.jpg"


def make_caltech_tree(parent: Path) -> CaltechTree:
    folder = parent / "caltech" / "256_ObjectCategories"
    seed = 0

    def write(rel: str, data: bytes) -> None:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def images(class_dir: str, count: int, first: int = 1) -> None:
        nonlocal seed
        number = class_dir[:3]
        for i in range(first, first + count):
            seed += 1
            write(f"{class_dir}/{number}_{i:04d}.jpg", jpeg_bytes(seed))

    images("001.ak47", 10)
    write("056.dog/056_0001.jpg", jpeg_bytes(100, mode="L"))
    write("056.dog/056_0002.jpg", jpeg_bytes(101, mode="CMYK"))
    images("056.dog", 5, first=3)
    full = jpeg_bytes(102, size=(64, 64))
    write("056.dog/056_0008.jpg", full)
    write("056.dog/056_0009.jpg", full[: len(full) // 2])  # truncated
    (folder / "056.dog" / "greg" / "vision309").mkdir(parents=True)
    images("198.spider", 7)
    write("198.spider/198_0008.jpg", (folder / "198.spider" / "198_0001.jpg").read_bytes())
    write("198.spider/RENAME2", b"rename these files\n")
    images("257.clutter", 6)
    write("257.clutter/257_0007.jpg", b"")
    return CaltechTree(parent / "caltech", folder)


# ------------------------------------------------------------------------------------- train config helpers
TINY = [
    "data=synthetic",
    "data.batch_size=8",
    "data.num_workers=0",
    "callbacks.grad_cam.num_images=4",
    "callbacks.grad_cam.strict=true",
    "callbacks.progress_bar.enabled=false",
    "model.pretrained=false",
    "model/optimizer=adamw",
    "trainer=cpu",
    "trainer.log_every_n_steps=1",
]


def tiny_overrides(data_root: Path, tmp_path: Path, model: str = "resnet50") -> list[str]:
    size = ["data.resize=80", "data.crop=76"] if "inception" in model else ["data.resize=64"]
    return [
        *TINY,
        f"model={model}",
        *size,
        f"data.root={data_root}",
        f"paths.root_dir={tmp_path}",
    ]


def compose_train(overrides: list[str]):
    """`conf/train.yaml` composed with `overrides`, as the train app would (its resolvers registered)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def run_cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "caltech_cam.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"train failed:\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
    )
    return proc


def run_dirs(tmp_path: Path, task: str = "train") -> list[Path]:
    return sorted((tmp_path / "outputs" / task).glob("*runs/*"))


# ------------------------------------------------------------------------------------- a checkpoint to load
def one_step_checkpoint(
    path: Path,
    model_name: str,
    class_names: list[str],
    preset: dict,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 2,
    weights_only: bool = False,
    options: dict | None = None,
) -> Path:
    """A real `ClassifierModule` checkpoint after a short fit on `inputs` (no run directory, no logger)."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from caltech_cam.models.classifier import ClassifierModule

    torch.manual_seed(0)
    module = ClassifierModule(model_name, len(class_names), class_names, preset=preset, options=options)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=len(inputs) // batch_size,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(TensorDataset(inputs, labels), batch_size=batch_size))
    trainer.save_checkpoint(path, weights_only=weights_only)
    return path


# --------------------------------------------------------------------------- bring-your-own dataset layouts
@dataclass(frozen=True)
class ImageFolderTree:
    """A tmp ImageFolder tree at ``root``: classes ``Mango < apple < kiwi`` (case-sensitive order), 8 real JPEGs
    each (some nested two folders deep, upper-case and ``.jpeg``/``.png`` extensions), a byte copy across two
    classes' sub-folders, a truncated JPEG, a text file inside a class and a file at the root."""

    root: Path
    bad: str = "kiwi/deep/er/broken.jpg"
    duplicate: tuple[str, str] = ("apple/a_00.jpg", "kiwi/k_07.JPG")
    skipped: tuple[str, ...] = ("README.txt", "apple/notes.txt")


def make_imagefolder_tree(root: Path) -> ImageFolderTree:
    def write(rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    for i in range(8):
        write(f"Mango/{'sub/' if i % 3 == 0 else ''}m_{i:02d}.jpeg", jpeg_bytes(300 + i))
        write(f"apple/a_{i:02d}.jpg", jpeg_bytes(320 + i))
    for i in range(7):
        write(f"kiwi/{'deep/er/' if i % 2 else ''}k_{i:02d}.jpg", jpeg_bytes(340 + i))
    png = io.BytesIO()
    Image.open(io.BytesIO(jpeg_bytes(360))).save(png, "PNG")
    write("kiwi/k_png.PNG", png.getvalue())
    write("kiwi/k_07.JPG", (root / "apple/a_00.jpg").read_bytes())
    full = jpeg_bytes(361, size=(64, 64))
    write("kiwi/deep/er/broken.jpg", full[: len(full) // 2])
    write("apple/notes.txt", b"not an image\n")
    write("README.txt", b"three fruit\n")
    return ImageFolderTree(root)


@dataclass(frozen=True)
class CubTree:
    """A tmp CUB-200-2011 replica: ``root`` is the parent, ``folder`` its ``CUB_200_2011``. Three classes of 8
    real JPEGs (48x40), ids 1..24 in class order, odd ids train; boxes ``x y w h`` with the last image's box
    reaching one pixel past its right edge (CUB's inclusive ends). ``crossing``: a byte copy of a training image
    that the official split puts in test; ``stray``: an image under images/ that images.txt does not list."""

    root: Path
    folder: Path
    classes: tuple[str, ...] = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
    crossing: tuple[str, str] = (
        "images/001.Black_footed_Albatross/bird_001.jpg",
        "images/001.Black_footed_Albatross/bird_002.jpg",
    )
    stray: str = "images/002.Laysan_Albatross/unlisted.jpg"

    def box(self, image_id: int) -> tuple[float, float, float, float]:
        """The x y w h written for ``image_id``."""
        if image_id == 24:
            return (30.0, 4.0, 19.0, 30.0)
        return (float(image_id % 5), 2.0 + image_id % 3, 20.0 + image_id % 7, 15.5)


def make_cub_tree(parent: Path) -> CubTree:
    tree = CubTree(parent / "cub", parent / "cub" / "CUB_200_2011")
    lines: dict[str, list[str]] = {name: [] for name in ("images", "labels", "split", "boxes")}
    for image_id in range(1, 25):
        label = (image_id - 1) // 8
        rel = f"{tree.classes[label]}/bird_{image_id:03d}.jpg"
        path = tree.folder / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(400 + image_id))
        lines["images"].append(f"{image_id} {rel}")
        lines["labels"].append(f"{image_id} {label + 1}")
        lines["split"].append(f"{image_id} {image_id % 2}")
        lines["boxes"].append(f"{image_id} " + " ".join(f"{v:.1f}" for v in tree.box(image_id)))
    first, second = (tree.folder / p for p in tree.crossing)
    second.write_bytes(first.read_bytes())
    (tree.folder / tree.stray).write_bytes(jpeg_bytes(499))
    files = {
        "images": "images.txt",
        "labels": "image_class_labels.txt",
        "split": "train_test_split.txt",
        "boxes": "bounding_boxes.txt",
    }
    for key, name in files.items():
        (tree.folder / name).write_text("\n".join(lines[key]) + "\n")
    return tree
