"""What GradCAMLogger adds to a validation pass, measured side by side in one run.

    python benchmarks/bench_callback.py                 # demo setup: ResNet50 at 64 px, 2,000 synthetic images
    python benchmarks/bench_callback.py --images 500 --repeats 2   # quicker

Validation passes with and without the callback alternate (so drift in machine load hits both alike); the
medians and their ratio are printed. Target: overhead <= 5% of a validation pass over 2,000 images.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from caltech_cam.callbacks import GradCAMLogger
from caltech_cam.data import CaltechDataModule, CaltechDataset, ensure_synthetic
from caltech_cam.models import get_spec
from caltech_cam.module import ClassifierModule


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--images", type=int, default=2000, help="validation images (synthetic set size)")
    p.add_argument("--resize", type=int, default=64)
    p.add_argument("--crop", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-images", type=int, default=16, help="probe images of the callback")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--no-faithfulness", action="store_true", help="callbacks.grad_cam.faithfulness=false")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--accelerator", default="auto")
    p.add_argument(
        "--data", type=Path, default=None, help="where to keep the synthetic set (default: a tmp dir)"
    )
    return p.parse_args()


def main() -> None:
    args = parse()
    work = Path(tempfile.mkdtemp(prefix="bench_callback_"))
    classes = 10
    root = ensure_synthetic(
        args.data or work / "synthetic",
        num_classes=classes,
        images_per_class=-(-args.images // classes),
        seed=0,
    ).root
    preset = get_spec(args.model).preset
    datamodule = CaltechDataModule(
        root,
        preset=preset,
        resize=args.resize,
        crop=args.crop,
        batch_size=args.batch_size,
        num_workers=2,
        split={"mode": "fractions", "fractions": [0.7, 0.15, 0.15]},
        seed=0,
    )
    datamodule.prepare_data()
    datamodule.setup("validate")
    # Validate over every image (all splits, evaluation transform): the pass the target is stated for.
    parts = [datamodule.train_dataset, datamodule.val_dataset, datamodule.test_dataset]
    datamodule.val_dataset = CaltechDataset(
        [p for d in parts for p in d.paths],
        [label for d in parts for label in d.labels],
        datamodule.preset.transform(train=False),
        datamodule.max_pixels,
    )
    module = ClassifierModule(
        args.model,
        datamodule.num_classes,
        datamodule.class_names,
        preset={"name": preset, "resize": args.resize, "crop": args.crop},
    )

    def one_pass(with_callback: bool) -> float:
        callbacks = (
            [GradCAMLogger(num_images=args.num_images, method=args.method, strict=True)]
            if with_callback
            else []
        )
        trainer = L.Trainer(
            accelerator=args.accelerator,
            devices=1,
            logger=TensorBoardLogger(str(work / "tb")),
            callbacks=callbacks,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        start = time.perf_counter()
        trainer.validate(module, datamodule=datamodule, verbose=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    one_pass(True)  # warm-up: workers, allocator, the probe's first decode
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for flag in (False, True):
            times[flag].append(one_pass(flag))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    n = len(datamodule.val_dataset)
    print(
        f"model={args.model} images={n} size={args.resize} probe={args.num_images} method={args.method} "
        f"device={'cuda' if torch.cuda.is_available() and args.accelerator != 'cpu' else 'cpu'} "
        f"threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    print(f"validation pass without callback  median {off:8.3f} s   {[round(t, 3) for t in times[False]]}")
    print(f"validation pass with GradCAMLogger median {on:8.3f} s   {[round(t, 3) for t in times[True]]}")
    print(
        f"callback cost {on - off:+.3f} s per validation end; ratio with/without = {on / off:.3f} "
        f"(overhead {100 * (on - off) / off:+.1f}%)"
    )


if __name__ == "__main__":
    main()
