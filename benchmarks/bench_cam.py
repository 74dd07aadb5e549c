"""Per-layer Grad-CAM maps of ResNet50's four stages: caltech_cam vs pytorch-grad-cam vs captum vs the floor.

    python benchmarks/bench_cam.py                       # batch 8 at 224 px, 5 repeats, cuda if present
    python benchmarks/bench_cam.py --repeats 3 --batch 2 --size 96   # a quick run
    python benchmarks/bench_cam.py --threads 1   # on a shared CPU: 2 OpenMP threads spin against other jobs

All contenders run round-robin in the same process on the same random-weight model, inputs and targets, so a
load change on a shared machine hits them alike. Each yields one map per layer at input size:
- caltech_cam: `compute_cams` (one forward + one `autograd.grad` for all four layers, normalized maps);
- pytorch-grad-cam: one `GradCAM` call per layer (it averages several target layers into one map);
- captum: one `LayerGradCam.attribute` per layer plus bilinear `LayerAttribution.interpolate`;
- floor: a plain forward and `torch.autograd.grad` of the target logits to layer1's output, the least any
  gradient method needs for a layer1 map.
Needs the `bench` extra (grad-cam, captum).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from caltech_cam.cam import compute_cams

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def contenders(
    model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor
) -> dict[str, Callable[[], object]]:
    modules = dict(model.named_modules())
    size = tuple(x.shape[-2:])
    wanted = [ClassifierOutputTarget(int(c)) for c in targets]

    def ours() -> object:
        return compute_cams(model, x, LAYERS, targets=targets)

    def pytorch_grad_cam() -> object:
        maps = {}
        for name in LAYERS:
            with GradCAM(model=model, target_layers=[modules[name]]) as cam:
                maps[name] = cam(x, targets=wanted)
        return maps

    def captum() -> object:
        return {
            name: LayerAttribution.interpolate(
                LayerGradCam(model, modules[name]).attribute(x, target=targets, relu_attributions=True),
                size,
                interpolate_mode="bilinear",
            )
            for name in LAYERS
        }

    def floor() -> object:
        kept = []
        handle = modules["layer1"].register_forward_hook(lambda m, i, o: kept.append(o))
        try:
            logits = model(x)
        finally:
            handle.remove()
        return torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), kept[0])

    return {"caltech_cam": ours, "pytorch-grad-cam": pytorch_grad_cam, "captum": captum, "floor": floor}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.resnet50().eval().to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 1000, (args.batch,), device=device)
    runs = contenders(model, x, targets)

    def timed(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for fn in runs.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    median = {name: statistics.median(ts) for name, ts in times.items()}

    print(
        f"ResNet50 (random weights), Grad-CAM of {', '.join(LAYERS)}, batch {args.batch} at {args.size} px, "
        f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"{'contender':<18}{'median s':>10}{'vs caltech_cam':>16}   all runs (s)")
    for name, t in median.items():
        runs_s = " ".join(f"{v:.3f}" for v in times[name])
        print(f"{name:<18}{t:>10.3f}{t / median['caltech_cam']:>15.2f}x   {runs_s}")
    print(
        f"caltech_cam / pytorch-grad-cam = {median['caltech_cam'] / median['pytorch-grad-cam']:.3f} (target <= 1/6 = 0.167); "
        f"caltech_cam / floor = {median['caltech_cam'] / median['floor']:.3f} (target <= 1.1)"
    )


if __name__ == "__main__":
    main()
