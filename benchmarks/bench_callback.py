"""What GradCAMLogger adds to a validation pass, measured side by side in one run, at several sizes.

    python benchmarks/bench_callback.py                          # 64 px / 300 images and 256 px / 1,000 images
    python benchmarks/bench_callback.py --setups 64x300           # one setup: image side x validation images
    python benchmarks/bench_callback.py --setups 64x40,96x60 --repeats 1 --sides 64 96   # a quick check

For each setup (input side S x N validation images, all from one synthetic set with boxes, read through the
evaluation transform), validation passes without the callback, with it (probe pictures and faithfulness only),
and with it plus the localization scalars (pointing game and energy pointing game on `--localization-images`
images, chunks of `--chunk-size`) alternate, so drift in machine load hits all alike; one callback instance per
variant is reused, as in a fit, so its probe is decoded once. Printed per setup: median pass times, the callback's
own validation-end time (median, timed inside its hook) and both as % of a pass without it.
Target (issue 9): overhead <= 5 % of a validation pass at 256 px with >= 1,000 images.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from caltech_cam.callbacks.grad_cam import GradCAMLogger
from caltech_cam.data import CaltechDataModule, CaltechDataset, ensure_synthetic
from caltech_cam.models import get_spec
from caltech_cam.models.classifier import ClassifierModule

CLASSES = 10


def setup_pair(text: str) -> tuple[int, int]:
    try:
        side, images = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a setup is SIDExIMAGES, e.g. 256x1000; got {text!r}") from None
    if side < 32 or images < 1:
        raise argparse.ArgumentTypeError(f"need side >= 32 and images >= 1, got {text!r}")
    return side, images


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--setups",
        type=lambda s: [setup_pair(t) for t in s.split(",")],
        default=[(64, 300), (256, 1000)],
        help="comma-separated SIDExIMAGES: input side (data.resize) x validation images (default 64x300,256x1000)",
    )
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--num-images", type=int, default=16, help="probe images of the callback")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--no-faithfulness", action="store_true", help="callbacks.grad_cam.faithfulness=false")
    p.add_argument(
        "--localization",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the callback with the localization scalars (default on)",
    )
    p.add_argument("--localization-images", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--accelerator", default="auto")
    p.add_argument(
        "--sides",
        type=int,
        nargs=2,
        default=(200, 500),
        metavar=("MIN", "MAX"),
        help="saved image sides of the synthetic set, px (default 200 500: Caltech-like decode cost)",
    )
    p.add_argument(
        "--data", type=Path, default=None, help="where to keep the synthetic set (default: a tmp dir)"
    )
    return p.parse_args()


class TimedGradCAMLogger(GradCAMLogger):
    """GradCAMLogger that records how long each of its validation ends took (device work included)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds: list[float] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        start = time.perf_counter()
        super().on_validation_epoch_end(trainer, pl_module)
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        if not trainer.sanity_checking:
            self.seconds.append(time.perf_counter() - start)


@dataclass
class Variant:
    name: str
    callback: TimedGradCAMLogger | None
    passes: list[float] = field(default_factory=list)


def validation_set(root: Path, args: argparse.Namespace, side: int, images: int) -> CaltechDataModule:
    """A datamodule whose val_dataset is a seeded pick of `images` files of the whole set (evaluation transform)."""
    datamodule = CaltechDataModule(
        root,
        preset=get_spec(args.model).preset,
        resize=side,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        persistent_workers=False,
        split={"mode": "fractions", "fractions": [0.7, 0.15, 0.15]},
        seed=0,
    )
    datamodule.prepare_data()
    datamodule.setup("validate")
    parts = [datamodule.train_dataset, datamodule.val_dataset, datamodule.test_dataset]
    paths = [p for d in parts for p in d.paths]
    labels = [label for d in parts for label in d.labels]
    if images > len(paths):
        raise SystemExit(f"the synthetic set has {len(paths)} images, fewer than the {images} asked for")
    pick = sorted(torch.randperm(len(paths), generator=torch.Generator().manual_seed(0))[:images].tolist())
    datamodule.val_dataset = CaltechDataset(
        [paths[i] for i in pick],
        [labels[i] for i in pick],
        datamodule.preset.transform(train=False),
        datamodule.max_pixels,
    )
    return datamodule


def measure(args: argparse.Namespace, root: Path, work: Path, side: int, images: int) -> dict[str, object]:
    datamodule = validation_set(root, args, side, images)
    module = ClassifierModule(
        args.model,
        datamodule.num_classes,
        datamodule.class_names,
        preset={"name": datamodule.preset.name, "resize": side},
    )
    common = {
        "num_images": args.num_images,
        "method": args.method,
        "faithfulness": not args.no_faithfulness,
        "chunk_size": args.chunk_size,
        "localization_images": args.localization_images,
        "strict": True,
    }
    variants = [
        Variant("without callback", None),
        Variant("with callback, no localization", TimedGradCAMLogger(localization=False, **common)),
    ]
    if args.localization:
        variants.append(
            Variant("with callback + localization", TimedGradCAMLogger(localization=True, **common))
        )

    def one_pass(variant: Variant) -> float:
        trainer = L.Trainer(
            accelerator=args.accelerator,
            devices=1,
            logger=TensorBoardLogger(str(work / "tb")),
            callbacks=[variant.callback] if variant.callback is not None else [],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        start = time.perf_counter()
        trainer.validate(module, datamodule=datamodule, verbose=False)
        if torch.cuda.is_available() and args.accelerator != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for variant in variants:  # warm-up: workers, allocator, each callback's probe and subset decode
        one_pass(variant)
        if variant.callback is not None:
            variant.callback.seconds.clear()
    for _ in range(args.repeats):
        for variant in variants:
            variant.passes.append(one_pass(variant))
    base = statistics.median(variants[0].passes)
    rows = {}
    for variant in variants:
        median = statistics.median(variant.passes)
        hook = statistics.median(variant.callback.seconds) if variant.callback is not None else 0.0
        rows[variant.name] = (median, 100 * (median - base) / base, hook, 100 * hook / base)
    return {"side": side, "images": len(datamodule.val_dataset), "rows": rows}


def main() -> None:
    args = parse()
    work = Path(tempfile.mkdtemp(prefix="bench_callback_"))
    most = max(images for _, images in args.setups)
    low, high = args.sides
    root = ensure_synthetic(
        args.data or work / "synthetic",
        num_classes=CLASSES,
        images_per_class=-(-most // CLASSES),
        seed=0,
        min_size=low,
        max_size=high,
    ).root
    results = [measure(args, root, work, side, images) for side, images in args.setups]
    device = "cuda" if torch.cuda.is_available() and args.accelerator != "cpu" else "cpu"
    print(
        f"model={args.model} probe={args.num_images} method={args.method} faithfulness={not args.no_faithfulness} "
        f"localization_images={args.localization_images} chunk_size={args.chunk_size} device={device} "
        f"threads={torch.get_num_threads()} workers={args.num_workers} repeats={args.repeats} "
        f"saved sides={low}-{high} px"
    )

    def cell(m: float, d: float, h: float, p: float) -> str:
        return f" | {m:7.2f} ({d:+6.1f}) {h:6.3f} ({p:5.1f})"

    width = len(cell(0, 0, 0, 0))
    print(f"{'':32s}" + "".join(f" | {r['side']} px / {r['images']} images".ljust(width) for r in results))
    print(f"{'':32s}" + f" | {'pass s':>7s} {'(+%)':>8s} {'hook s':>6s} {'(%)':>7s}" * len(results))
    for name in results[0]["rows"]:
        cells = "".join(cell(*r["rows"][name]) for r in results)
        print(f"{name:32s}{cells}")
    print(
        "pass s: median validation pass; (+%): its overhead over the pass without the callback; hook s: median "
        "time inside the callback's validation end; (%): that as % of a pass without the callback."
    )


if __name__ == "__main__":
    main()
