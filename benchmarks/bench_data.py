"""Is training data-bound? Loader throughput (decode path vs uint8 cache) against each backbone's training step.

    python benchmarks/bench_data.py                         # 1,000 Caltech-like JPEGs, study sizes, cuda if present
    python benchmarks/bench_data.py --device cuda --batch 256 --model-batch 256
    python benchmarks/bench_data.py --images 96 --resize 64 --models resnet50 --model-steps 2   # a quick CPU run

Caltech-like data: JPEGs drawn by the synthetic generator at sides --sides (default 200-500 px, Caltech-256's
typical range), saved at JPEG quality drawn uniformly from --quality (75-95), written once into --root (kept for
reruns) or a temporary folder. For each preset (resnet: 256 -> 3x256x256; inception: 256 -> crop 224, gray) it
measures, side by side in one process on the same files:
- per core: the training dataset read in the main process with one torch thread (num_workers=0): decode + resize
  + preset on the CPU (decode path) vs a uint8 slice of the memory-mapped cache (cached path), plus the cached
  path's device step (crop/flip/gray/normalize of the batch on --device);
- the DataLoader (batch --batch, shuffled, persistent workers, second epoch) at num_workers = 1, 2 and all cores;
- prefetch_factor 2 vs 4 and persistent_workers on vs off (3 epochs, worker start-up included) at all cores;
- a training step (forward, backward, SGD) of each backbone at the preset's size on --device (bf16 autocast and
  channels_last on CUDA, as trainer=gpu), and the ratio loader img/s / model img/s: below 1 the run is data-bound.
A CPU model is far slower than either loader: the CPU ratios only check the script; the numbers that matter are
the per-core rates (scaled to a GPU node's workers in the README) and a CUDA run's ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from caltech_cam.data import CaltechDataModule
from caltech_cam.data.synthetic.draw import OBJECT_SPECS, render_image
from caltech_cam.models import build_model, get_spec, split_outputs

MODELS = ("resnet50", "inception_v3", "my_resnet50", "my_inception_v3")


def write_jpegs(root: Path, images: int, sides: tuple[int, int], quality: tuple[int, int]) -> Path:
    """``images`` JPEGs in a Caltech layout (4 object classes + clutter) at random sides and qualities."""
    marker = root / f".bench-{images}-{sides[0]}-{sides[1]}-{quality[0]}-{quality[1]}"
    if marker.is_file():
        return root
    classes = 5
    for c in range(classes):
        folder = root / f"{c + 1:03d}.{OBJECT_SPECS[c].name if c < classes - 1 else 'clutter'}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(c, images, classes):
            rng = np.random.default_rng([7, c, i])
            image, _ = render_image(OBJECT_SPECS[c] if c < classes - 1 else None, rng, *sides)
            image.save(
                folder / f"{c + 1:03d}_{i:05d}.jpg",
                "JPEG",
                quality=int(rng.integers(quality[0], quality[1] + 1)),
            )
    marker.touch()
    return root


def datamodule(
    root: Path, cache_dir: Path, preset: str, resize: int | None, cache: str | None
) -> CaltechDataModule:
    dm = CaltechDataModule(
        root,
        preset=preset,
        resize=resize,
        cache=cache,
        cache_dir=cache_dir,
        num_workers=os.cpu_count() or 1,
        split={"mode": "fractions", "fractions": [0.8, 0.1, 0.1]},
        near_duplicates={"enabled": False},
    )
    dm.prepare_data()
    dm.setup()
    return dm


def per_core(dataset: Dataset, limit: int, batch: int) -> float:
    """img/s of a DataLoader with num_workers=0 on one torch thread over ``limit`` images: one worker's work
    (read, decode/slice, transform, collate), without the inter-process hand-over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        subset = Subset(dataset, range(min(limit, len(dataset))))
        next(iter(DataLoader(subset, batch_size=batch)))
        start = time.perf_counter()
        n = sum(len(y) for _, y in DataLoader(subset, batch_size=batch, shuffle=True))
        return n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def loader_rate(
    dataset: Dataset, batch: int, workers: int, *, prefetch: int | None = None, pin: bool = False
) -> float:
    """img/s of the second epoch of a persistent, shuffled DataLoader (start-up excluded)."""
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers > 0 else None,
        pin_memory=pin,
    )
    for _ in loader:
        pass
    start = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - start)


def epochs_time(
    dataset: Dataset, batch: int, workers: int, persistent: bool, prefetch: int, epochs: int = 3
) -> float:
    """Seconds for ``epochs`` epochs from a fresh DataLoader, worker start-up included."""
    start = time.perf_counter()
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=persistent,
        prefetch_factor=prefetch,
    )
    for _ in range(epochs):
        for _ in loader:
            pass
    del loader
    return time.perf_counter() - start


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` after one warm-up call (synchronized on CUDA)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_rate(dm: CaltechDataModule, batch: int, device: torch.device, repeats: int) -> float:
    """img/s of the cached path's device step (finish_batch in training) on a batch already on ``device``."""
    images = torch.stack([dm.train_dataset[i % len(dm.train_dataset)][0] for i in range(batch)]).to(device)
    return batch / timed(lambda: dm.finish_batch(images, train=True), device, repeats)


def model_rate(name: str, dm: CaltechDataModule, batch: int, device: torch.device, repeats: int) -> float:
    """img/s of one training step (forward, loss, backward, SGD step) of backbone ``name`` at the preset's size."""
    preset = dm.preset
    model = build_model(
        name,
        257,
        in_channels=preset.in_channels,
        image_size=preset.output_size,
        input_mean=preset.mean,
        input_std=preset.std,
    ).to(device)
    model.train()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, preset.in_channels, preset.output_size, preset.output_size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 257, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits, aux = split_outputs(model(x))
            loss = torch.nn.functional.cross_entropy(logits, y)
            if aux is not None:
                loss = loss + 0.4 * torch.nn.functional.cross_entropy(aux, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch / timed(step, device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--sides", type=int, nargs=2, default=(200, 500))
    parser.add_argument("--quality", type=int, nargs=2, default=(75, 95))
    parser.add_argument("--root", type=Path, default=None, help="where the JPEGs and the cache go (kept)")
    parser.add_argument("--presets", nargs="+", default=["resnet", "inception"])
    parser.add_argument("--resize", type=int, default=None, help="override the presets' 256 (quick runs)")
    parser.add_argument("--batch", type=int, default=64, help="loader batch size")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="default: 1 2 and all cores")
    parser.add_argument("--per-core-images", type=int, default=300)
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="none: skip the model steps")
    parser.add_argument("--model-batch", type=int, default=None, help="default: 64 on CUDA, 8 on CPU")
    parser.add_argument(
        "--model-steps", type=int, default=None, help="timed steps; default 20 on CUDA, 2 on CPU"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    cores = os.cpu_count() or 1
    workers = args.workers or sorted({1, 2, cores})
    model_batch = args.model_batch or (64 if cuda else 8)
    steps = args.model_steps or (20 if cuda else 2)

    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch)
        data = write_jpegs(root / "jpegs", args.images, tuple(args.sides), tuple(args.quality))
        files = sorted(data.glob("*/*.jpg"))
        kb = statistics.mean(f.stat().st_size for f in files) / 1024
        print(
            f"data: {len(files)} JPEGs, sides {args.sides[0]}-{args.sides[1]} px, quality {args.quality[0]}-"
            f"{args.quality[1]}, mean {kb:.0f} KB; {cores} cores; device {device}; torch {torch.__version__}"
        )
        for preset in args.presets:
            live = datamodule(data, root / "cache", preset, args.resize, None)
            cached = datamodule(data, root / "cache", preset, args.resize, "uint8")
            p = live.preset
            print(
                f"\n== preset {preset}: resize {p.resize} -> {p.in_channels}x{p.output_size}x{p.output_size}, "
                f"{len(live.train_dataset)} training images, loader batch {args.batch}"
            )
            decode_core = per_core(live.train_dataset, args.per_core_images, args.batch)
            cache_core = per_core(cached.train_dataset, len(cached.train_dataset), args.batch)
            finish = device_rate(cached, args.batch, device, 5)
            print(
                f"per core (num_workers=0, 1 thread)   decode {decode_core:9.0f} img/s   cached {cache_core:9.0f} img/s"
                f"   cached/decode {cache_core / decode_core:6.1f}x"
            )
            print(
                f"cached path's device step on {device}: {finish:9.0f} img/s (batch {args.batch}, finish_batch train)"
            )
            rates: dict[int, tuple[float, float]] = {}
            for w in workers:
                rates[w] = (
                    loader_rate(live.train_dataset, args.batch, w, pin=cuda),
                    loader_rate(cached.train_dataset, args.batch, w, pin=cuda),
                )
                d, c = rates[w]
                print(
                    f"loader num_workers={w:<3d}  decode {d:9.0f} img/s ({d / w:6.0f}/worker)   cached {c:9.0f} "
                    f"img/s ({c / w:7.0f}/worker)   cached/decode {c / d:6.1f}x"
                )
            top = max(workers)
            for name, dataset in (("decode", live.train_dataset), ("cached", cached.train_dataset)):
                pf = {f: loader_rate(dataset, args.batch, top, prefetch=f) for f in (2, 4)}
                on, off = (
                    epochs_time(dataset, args.batch, top, persistent, 2) for persistent in (True, False)
                )
                print(
                    f"{name}: num_workers={top} prefetch_factor 2: {pf[2]:8.0f} img/s, 4: {pf[4]:8.0f} img/s "
                    f"({pf[4] / pf[2]:4.2f}x); 3 epochs persistent_workers on {on:6.2f} s, off {off:6.2f} s"
                )
            for name in args.models:
                if get_spec(name).preset != preset:
                    continue
                m = model_rate(name, live, model_batch, device, steps)
                d, c = rates[top]
                verdict = lambda r: "data-bound" if r < 1 else "compute-bound"  # noqa: E731
                print(
                    f"model {name:<16s} train step {m:8.1f} img/s (batch {model_batch}, {device})   loader/model at "
                    f"{top} workers: decode {d / m:8.2f} ({verdict(d / m)})   cached {min(c, finish) / m:8.2f} "
                    f"({verdict(min(c, finish) / m)})"
                )


if __name__ == "__main__":
    main()
