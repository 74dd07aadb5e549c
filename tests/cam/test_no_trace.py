"""A call leaves nothing behind: weights, .grad, modes, BN statistics, RNG, hooks, memory; any grad mode."""

from __future__ import annotations

import ast
import copy
import gc
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from caltech_cam.cam import compute_cams, confidence_change, engine

LAYERS = ["layer1", "layer2", "layer3", "layer4"]
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


# Other jobs may share these 2 cores: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def snapshot(model: nn.Module) -> dict[str, object]:
    """Everything a call could leave behind on the model or in torch's global state."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},  # weights, running stats, num_batches
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {(n, d): len(getattr(m, d)) for n, m in model.named_modules() for d in HOOK_DICTS},
        "global_hooks": len(nn.modules.module._global_forward_hooks),
        "rng": torch.get_rng_state(),
        "grad_enabled": torch.is_grad_enabled(),
        "inference": torch.is_inference_mode_enabled(),
    }


def assert_same(before: dict[str, object], after: dict[str, object]) -> None:
    for key in before:
        b, a = before[key], after[key]
        if isinstance(b, dict):
            assert b.keys() == a.keys(), key
            for name in b:
                if isinstance(b[name], torch.Tensor):
                    assert torch.equal(b[name], a[name]), f"{key}: {name} changed"
                else:
                    assert b[name] == a[name], f"{key}: {name} changed"
        elif isinstance(b, torch.Tensor):
            assert torch.equal(b, a), key
        else:
            assert b == a, key


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_a_call_on_a_training_model_leaves_no_trace(model, images, method):
    model.train()
    model.layer2[0].bn1.eval()  # a mix of modes (e.g. frozen BN) must come back as it was
    model.fc.weight.requires_grad_(False)
    model(images).sum().backward()  # existing .grad (and BN statistics moved by one step)
    before = snapshot(model)
    for call in range(2):
        maps = compute_cams(model, images, LAYERS, method=method, targets=torch.tensor([1, 7]))
        assert_same(before, snapshot(model))
        assert all(m.shape == (2, 64, 64) and m.amax() == 1 for m in maps.values()), call


def test_gradient_accumulation_in_progress_is_undisturbed(model, images):
    reference = copy.deepcopy(model)
    for net, call in ((model, True), (reference, False)):
        net.train()
        net(images[:1]).sum().backward()  # first micro-batch
        if call:
            compute_cams(net, images, LAYERS)
        net(images[1:]).logsumexp(dim=1).sum().backward()  # second micro-batch accumulates
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name
    for (name, b), c in zip(model.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(b, c), name


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_works_under_inference_mode_and_no_grad(model, images, mode):
    model.eval()
    expected = compute_cams(model, images, LAYERS, method="hirescam")
    context = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
    with context:
        inside = (
            images.clone()
        )  # an inference tensor under inference_mode, as Lightning's validate hands over
        maps = compute_cams(model, inside, LAYERS, method="hirescam")
        assert torch.is_inference_mode_enabled() == (mode == "inference_mode") and not torch.is_grad_enabled()
        scores = confidence_change(model, inside, maps)
    for layer in LAYERS:
        assert torch.equal(maps[layer], expected[layer])
        assert not maps[layer].is_inference()  # usable after the block too
        assert 0 <= scores[layer]["average_drop"] <= 100
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_frozen_parameters(model, images):
    model.eval()
    expected = compute_cams(model, images, LAYERS)
    model.requires_grad_(False)
    maps = compute_cams(model, images, LAYERS)
    assert not any(p.requires_grad for p in model.parameters())
    for layer in LAYERS:
        assert torch.equal(maps[layer], expected[layer])


def test_tuple_and_named_tuple_outputs(images):
    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=10).eval()
    Outputs = namedtuple("Outputs", ["logits", "aux"])

    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = base

        def forward(self, x):
            logits = self.net(x)
            return Outputs(logits, logits.detach() * 0)

    class Plain(Named):
        def forward(self, x):
            return (self.net(x), None)

    expected = compute_cams(base, images, ["layer3"], method="gradcampp")["layer3"]
    for wrapper in (Named(), Plain()):
        torch.testing.assert_close(
            compute_cams(wrapper, images, ["net.layer3"], method="gradcampp")["net.layer3"], expected
        )


def test_inception_in_train_mode_returns_to_train_mode():
    # In train mode InceptionV3 returns InceptionOutputs and its aux head needs >= 299 px; the pass runs in eval.
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(
        weights=None, num_classes=5, aux_logits=True, init_weights=False
    ).train()
    x = torch.randn(1, 3, 80, 80)
    before = snapshot(model)
    maps = compute_cams(model, x, ["Mixed_5d", "Mixed_6e"])
    assert_same(before, snapshot(model))
    assert maps["Mixed_6e"].shape == (1, 80, 80)


def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def test_memory_flat_over_repeated_calls(model, images):
    model.eval()
    for _ in range(2):  # warm caches (kernels, lazily created buffers)
        compute_cams(model, images, LAYERS)
    start = live_tensors()
    gc.disable()
    try:
        for _ in range(20):
            compute_cams(model, images, LAYERS, method="gradcampp")
        # Nothing we create lives in a reference cycle: plain reference counting freed it all.
        assert sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor)) == start
    finally:
        gc.enable()
    assert live_tensors() == start


# Every module of caltech_cam.cam is one of these. The compute modules keep tensors on the device: no host read
# (.item/.cpu/.tolist/.numpy, float/int/bool of a value) except those pinned in
# test_compute_modules_never_read_back_to_the_host. The edge modules make text, tables and pictures, which live on
# the host. No module imports numpy: maps are tensors until a file is written.
CAM_DIR = Path(engine.__file__).parent
COMPUTE = {
    "engine.py",
    "methods.py",
    "metrics/faithfulness.py",
    "metrics/localization.py",
    "metrics/road.py",
    "metrics/registry.py",
}
# sanity.py and scoring.py summarize scores into flags, tables and files.
EDGE = {"__init__.py", "explainer.py", "render.py", "metrics/__init__.py", "metrics/sanity.py", "scoring.py"}
HOST_READ_METHODS = {"item", "cpu", "tolist", "numpy"}
HOST_READ_BUILTINS = {"float", "int", "bool"}


def numpy_imports(tree: ast.AST) -> list[int]:
    """Line numbers of `import numpy[...]` / `from numpy[...] import ...` anywhere in the tree."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        lines += [node.lineno for name in names if name.split(".")[0] == "numpy"]
    return lines


def host_reads(tree: ast.AST) -> list[tuple[str, str]]:
    """(enclosing function, what) for every call that reads a value back to the host."""
    found = []
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        for node in ast.walk(function):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in HOST_READ_METHODS:
                found.append((function.name, f".{func.attr}()"))
            elif isinstance(func, ast.Name) and func.id in HOST_READ_BUILTINS:
                found.append((function.name, f"{func.id}()"))
    return sorted(set(found))


def test_every_cam_module_is_classified():
    # A new module must be put in COMPUTE or EDGE, so no file escapes the checks below.
    assert {p.relative_to(CAM_DIR).as_posix() for p in CAM_DIR.rglob("*.py")} == COMPUTE | EDGE


@pytest.mark.parametrize("name", sorted(COMPUTE | EDGE))
def test_no_cam_module_imports_numpy(name):
    assert numpy_imports(ast.parse((CAM_DIR / name).read_text())) == [], name


def test_compute_modules_never_read_back_to_the_host():
    # (A CUDA sync-debug test runs when a GPU is present, below.)
    hits = {name: host_reads(ast.parse((CAM_DIR / name).read_text())) for name in sorted(COMPUTE)}
    assert hits == {
        "engine.py": [("check_range", ".tolist()")],
        "methods.py": [],
        "metrics/faithfulness.py": [],
        "metrics/localization.py": [],
        "metrics/registry.py": [],
        # ROAD's conjugate gradients test convergence on the host once per iteration and name the residual when
        # they fail; the masks are checked once (an image with every pixel removed is refused by index).
        "metrics/road.py": [
            ("_solve", ".item()"),
            ("_solve", "bool()"),
            ("noisy_linear_impute", ".tolist()"),
        ],
    }


def test_the_checks_find_what_they_look_for():
    source = """
import numpy as np
from numpy.linalg import svd

def f(x):
    import numpy
    return x.item() + float(x.sum()) + len(x.cpu().tolist())
"""
    tree = ast.parse(source)
    assert numpy_imports(tree) == [2, 3, 6]
    assert host_reads(tree) == [("f", ".cpu()"), ("f", ".item()"), ("f", ".tolist()"), ("f", "float()")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("method", ["gradcam", "layercam", "xgradcam"])
def test_no_host_sync_on_cuda(method):
    torch.manual_seed(0)
    model = torchvision.models.resnet50().cuda()
    x = torch.randn(2, 3, 96, 96, device="cuda")
    compute_cams(model, x, LAYERS, method=method)  # warm-up (cuDNN autotuning may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        maps = compute_cams(model, x, LAYERS, method=method)
        # Targets on the CPU are range-checked on the host; targets on the GPU are not read back.
        compute_cams(model, x, LAYERS, method=method, targets=torch.tensor([1, 2]))
        compute_cams(model, x, LAYERS, method=method, targets=torch.tensor([1, 2], device="cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert maps["layer4"].device.type == "cuda"
