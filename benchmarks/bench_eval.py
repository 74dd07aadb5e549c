"""Scoring explanations: ROAD and deletion/insertion, caltech_cam vs pytorch-grad-cam vs Quantus vs torch-cam.

    python benchmarks/bench_eval.py                                  # 8 images at 224 px, resnet50, CPU
    python benchmarks/bench_eval.py --images 2 --size 64 --threads 1 # a quick check on a shared machine
    python benchmarks/bench_eval.py --device cuda                    # ours on the GPU (the others impute on CPU)

Same model (the registry's `--model`, random weights, 257 classes), images, maps (smooth, CAM-like: a random
7×7 map upsampled bilinearly) and target classes for everyone. Every contender calls the model through one
wrapper that counts the images it forwards and times its forwards, so the table shows how much of each wall time
is the model and how much is the metric's own work (imputation, masking, host copies).

ROAD, MoRF + LeRF at removal fractions 0.1 … 0.9, imputation noise 0.01, 18 forwards per image for all three:
- caltech_cam: `road_scores` (batched multigrid-CG imputation of images × fractions, `--chunk` masked images
  per solve and forward: 8 on CPU, 64 on GPU);
- pytorch-grad-cam: `ROADMostRelevantFirst(q)` and `ROADLeastRelevantFirst(q)` for q = 10 … 90 (the same 18
  removal sets: its percentile q removes 100 − q %), called with `return_diff=False` so it does not also forward
  the originals 18 times; one scipy sparse solve per image × fraction on the CPU;
- Quantus 0.6.0: its `ROAD` crashes on 3-channel images (it ranks the map broadcast over channels and indexes
  H·W pixels with C·H·W indices: IndexError), so this runs its `ROAD.evaluate_batch` loop with the index fixed:
  per fraction, Quantus' own `noisy_linear_imputation` per image (scipy), then one batched forward; MoRF and LeRF.
Deletion/insertion (RISE), 16 steps:
- caltech_cam: `deletion_auc` + `insertion_auc` (B + B·17 forwards each, in chunks of 32 like torch-cam's;
  insertion from RISE's blur);
- torch-cam 0.5.0: `DeletionInsertionMetric(steps=16)` (B + B·31 forwards: it shares the all-baseline point;
  insertion from its zero baseline).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from caltech_cam.cam.metrics.faithfulness import deletion_auc, insertion_auc
from caltech_cam.cam.metrics.road import ROAD_FRACTIONS, road_scores
from caltech_cam.models import build_model


class TimedModel(nn.Module):
    """The model, with every forward counted (images) and timed (synchronized on CUDA)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds, self.images = 0.0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sync(x.device)
        start = time.perf_counter()
        out = self.model(x)
        sync(x.device)
        self.seconds += time.perf_counter() - start
        self.images += x.shape[0]
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cam_like_maps(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """Smooth maps in [0, 1] like an upsampled CAM, plus a tiny jitter so that no two pixels tie."""
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(batch, 1, 7, 7, generator=g)
    maps = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    maps = maps + 1e-4 * torch.rand(batch, size, size, generator=g)
    return (
        (maps - maps.amin((1, 2), keepdim=True))
        / (maps.amax((1, 2), keepdim=True) - maps.amin((1, 2), keepdim=True))
    ).to(device)


def road_contenders(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, chunk: int
) -> dict[str, Callable[[], object]]:
    percentiles = [round(100 * p) for p in ROAD_FRACTIONS]

    def ours() -> object:
        return road_scores(model, x, maps, targets, noise=0.01, chunk_size=chunk)

    def pytorch_grad_cam() -> object:
        from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        cams = maps.cpu().numpy()
        wanted = [ClassifierOutputSoftmaxTarget(int(c)) for c in targets]
        return [
            metric(q)(x, cams, wanted, model, return_diff=False)
            for metric in (ROADMostRelevantFirst, ROADLeastRelevantFirst)
            for q in percentiles
        ]

    def quantus() -> object:
        from quantus.functions.perturb_func import noisy_linear_imputation

        xs, flat = x.cpu().numpy(), maps.flatten(1).cpu().numpy()
        pixels = flat.shape[1]
        out = []
        for ranking in (np.argsort(-flat, axis=1), np.argsort(flat, axis=1)):  # MoRF, LeRF
            for p in percentiles:
                top = ranking[:, : int(pixels * p / 100)]  # Quantus' count: ⌊HW·p/100⌋
                perturbed = np.stack(
                    [
                        noisy_linear_imputation(arr=xi, indices=k, noise=0.01)
                        for xi, k in zip(xs, top, strict=True)
                    ]
                )
                with torch.no_grad():
                    logits = model(torch.as_tensor(perturbed, dtype=x.dtype, device=x.device))
                out.append(logits.argmax(dim=1).cpu().numpy() == targets.cpu().numpy())
        return out

    return {"caltech_cam": ours, "pytorch-grad-cam": pytorch_grad_cam, "quantus": quantus}


class FixedMaps:
    """torch-cam's CAM-extractor protocol, handing back the benchmark's maps (no CAM cost is timed)."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **_: object) -> list[torch.Tensor]:
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    def _hooks_off(self):
        import contextlib

        return contextlib.nullcontext()


def rise_contenders(
    model: nn.Module, x: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor
) -> dict[str, Callable[[], object]]:
    def ours() -> object:
        # torch-cam forwards 32 perturbed images at a time: the same chunk here.
        return (
            deletion_auc(model, x, maps, targets, steps=16, chunk_size=32),
            insertion_auc(model, x, maps, targets, steps=16, chunk_size=32),
        )

    def torchcam() -> object:
        from torchcam.metrics import DeletionInsertionMetric

        metric = DeletionInsertionMetric(FixedMaps(model, maps), partial(torch.softmax, dim=-1), steps=16)
        metric.update(x, class_idx=[int(c) for c in targets])
        return metric.summary()

    return {"caltech_cam": ours, "torch-cam": torchcam}


def run(
    title: str, model: TimedModel, runs: dict[str, Callable[[], object]], device: torch.device
) -> dict[str, tuple[float, float, int]]:
    results = {}
    for name, fn in runs.items():
        model.seconds, model.images = 0.0, 0
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        results[name] = (time.perf_counter() - start, model.seconds, model.images)
    base = results["caltech_cam"][0]
    print(f"\n{title}")
    print(
        f"{'contender':<18}{'wall s':>9}{'vs ours':>9}{'forwards':>10}{'forward s':>11}{'forward share':>15}{'rest s':>9}"
    )
    for name, (wall, fwd, images) in results.items():
        print(
            f"{name:<18}{wall:>9.2f}{wall / base:>8.1f}x{images:>10}{fwd:>11.2f}{fwd / wall:>14.0%}{wall - fwd:>9.2f}"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="caltech_cam's chunk_size (masked images per solve and forward); default 8 on CPU, 64 on GPU",
    )
    parser.add_argument("--skip", nargs="*", default=[], help="contenders to leave out, e.g. quantus")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    # On the CPU, chunks of multi-megabyte tensors cost page faults on every allocation; small chunks stay cached.
    chunk = args.chunk or (64 if device.type == "cuda" else 8)
    model = TimedModel(build_model(args.model, num_classes=257).eval().to(device))
    x = (
        F.avg_pool2d(torch.randn(args.images, 3, args.size, args.size), 5, 1, 2, count_include_pad=False)
        .mul(2)
        .to(device)
    )
    maps = cam_like_maps(args.images, args.size, device)
    with torch.no_grad():
        targets = model(x).argmax(dim=1)
        road_scores(model, x[:1], maps[:1], targets[:1])  # warm-up: allocator, kernels
    print(
        f"{args.model} (random weights), {args.images} images at {args.size} px, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, caltech_cam chunk_size {chunk}"
    )
    road = {k: v for k, v in road_contenders(model, x, maps, targets, chunk).items() if k not in args.skip}
    rise = {k: v for k, v in rise_contenders(model, x, maps, targets).items() if k not in args.skip}
    r = run("ROAD, MoRF + LeRF, fractions 0.1 ... 0.9, noise 0.01", model, road, device)
    d = run("Deletion + insertion AUC, 16 steps", model, rise, device)

    def rest(name: str, res: dict[str, tuple[float, float, int]]) -> float:
        return res[name][0] - res[name][1]

    print()
    for name in r:
        if name != "caltech_cam":
            print(
                f"ROAD {name} / caltech_cam: end to end {r[name][0] / r['caltech_cam'][0]:.1f}x, "
                f"without the forwards {rest(name, r) / rest('caltech_cam', r):.1f}x (target at 224 px on CPU: >= 10x)"
            )
    if "torch-cam" in d:
        print(
            f"deletion/insertion torch-cam / caltech_cam: end to end {d['torch-cam'][0] / d['caltech_cam'][0]:.2f}x, "
            f"without the forwards {rest('torch-cam', d) / rest('caltech_cam', d):.2f}x"
        )


if __name__ == "__main__":
    main()
