"""Bad input stops with a ValueError that names the value, and a failed call still leaves no trace."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from caltech_cam.cam import (
    METHODS,
    compute_cams,
    confidence_change,
    deletion_auc,
    get_method,
    make_grid,
    overlay,
    register,
)
from caltech_cam.cam.methods import ALIASES

# Other jobs may share these 2 cores: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": ["layer5"]}, r"unknown layer 'layer5'; valid names: conv1, bn1, relu, maxpool, layer1, "),
        ({"layers": ["layer4", "layer4"]}, r"lists 'layer4' more than once"),
        ({"layers": []}, r"layers is empty"),
        ({"layers": ["fc"]}, r"layer 'fc' outputs a 2-D tensor, not a 4-D feature map"),
        ({"layers": ["layer1.0.relu"]}, r"layer 'layer1.0.relu' runs more than once"),
        ({"targets": torch.tensor([1, 2, 3])}, r"targets has shape \(3,\); expected \(2,\)"),
        ({"targets": torch.tensor([[1, 2]])}, r"targets has shape \(1, 2\)"),
        (
            {"targets": torch.tensor([1, 10])},
            r"targets \[10\] out of range: the model has 10 classes \(0..9\)",
        ),
        ({"targets": [-1, 3]}, r"targets \[-1\] out of range"),
        ({"targets": torch.tensor([1.0, 2.0])}, r"integer class indices, got dtype torch.float32"),
        (
            {"method": "gradcam+++"},
            r"unknown CAM method 'gradcam\+\+\+'; choose one of gradcam \(also grad-cam\), "
            r"gradcampp \(also gradcam\+\+, gradcam_pp, GradCAMPlusPlus\), hirescam",
        ),
        ({"size": (0, 5)}, r"size must be a positive int or \(H, W\), got \(0, 5\)"),
        ({"size": (1, 2, 3)}, r"size must be"),
    ],
)
def test_bad_arguments_name_the_value(model, kwargs, message):
    model.train()
    args = {"layers": ["layer4"], **kwargs}
    before = hook_count(model)
    with pytest.raises(ValueError, match=message):
        compute_cams(model, X, **args)
    assert hook_count(model) == before  # hooks removed on the way out
    assert all(m.training for m in model.modules())  # modes restored on the way out


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (
            torch.zeros(3, 64, 64),
            r"images must be a float tensor \(B, C, H, W\), got torch.float32 tensor of shape \(3, 64, 64\)",
        ),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), r"got torch.uint8 tensor"),
    ],
)
def test_bad_images(model, images, message):
    with pytest.raises(ValueError, match=message):
        compute_cams(model, images, ["layer4"])


def test_a_layer_that_never_runs(model):
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.spare = model, nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.net(x)

    with pytest.raises(ValueError, match=r"layer 'spare' did not run in the forward pass"):
        compute_cams(Unused(), X, ["net.layer4", "spare"])


def test_a_model_that_does_not_return_logits(model):
    with pytest.raises(ValueError, match=r"the model returned a tensor of shape \(2, 512, 2, 2\)"):
        compute_cams(nn.Sequential(*list(model.children())[:-2]), X, ["4"])


def test_metric_and_render_arguments(model):
    maps = {"layer4": torch.rand(2, 32, 32)}
    with pytest.raises(
        ValueError, match=r"map of layer 'layer4' has shape \(2, 32, 32\); expected \(B, H, W\)"
    ):
        confidence_change(model, X, maps)
    with pytest.raises(ValueError, match=r"targets \[10\] out of range: the model has 10 classes"):
        confidence_change(model, X, {"layer4": torch.rand(2, 64, 64)}, [0, 10])
    with pytest.raises(ValueError, match=r"saliency of shape \(2, 32, 32\)"):
        deletion_auc(model, X, maps["layer4"])
    with pytest.raises(ValueError, match=r"steps must be >= 1, got 0"):
        deletion_auc(model, X, torch.rand(2, 64, 64), steps=0)
    rgb = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"unknown colormap 'nope'"):
        overlay(rgb, maps["layer4"], cmap="nope")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        overlay(rgb, maps["layer4"], alpha=1.5)
    with pytest.raises(ValueError, match=r"images must be uint8 \(..., 3, H, W\), got torch.float32"):
        overlay(rgb.float(), maps["layer4"])
    with pytest.raises(
        ValueError, match=r"maps of shape \(2, 32, 32\) do not fit images of shape \(2, 3, 16, 16\)"
    ):
        overlay(rgb[..., :16, :16], maps["layer4"])
    with pytest.raises(ValueError, match=r"no map for layer 'layer3'; maps has layer4"):
        make_grid(rgb, maps, layer_names=["layer3"])
    with pytest.raises(ValueError, match=r"1 captions for 2 images"):
        make_grid(rgb, maps, ["only one"])


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("gradcam", "gradcam"),
        ("Grad-CAM", "gradcam"),
        ("GRADCAM", "gradcam"),
        ("gradcam++", "gradcampp"),
        ("Grad-CAM++", "gradcampp"),
        ("gradcam_pp", "gradcampp"),
        ("GradCAMPlusPlus", "gradcampp"),
        ("gradcampp", "gradcampp"),
        ("HiResCAM", "hirescam"),
        ("XGrad-CAM", "xgradcam"),
        ("layer_cam", "layercam"),
        ("Eigen CAM", "eigencam"),
    ],
)
def test_method_aliases_name_one_canonical_method(spelling, canonical):
    assert get_method(spelling) is METHODS[canonical]


def test_aliases_compute_the_canonical_maps(model):
    model.eval()
    torch.testing.assert_close(
        compute_cams(model, X, ["layer3"], method="Grad-CAM++")["layer3"],
        compute_cams(model, X, ["layer3"], method="gradcampp")["layer3"],
        rtol=0,
        atol=0,
    )


def test_an_alias_cannot_name_two_methods():
    before = (dict(METHODS), dict(ALIASES))
    with pytest.raises(
        ValueError, match=r"CAM method 'mine': the spelling 'Grad_CAM' already means 'gradcam'"
    ):
        register("mine", aliases=("Grad_CAM",))(lambda a, g: a.sum(dim=1))
    assert before == (METHODS, ALIASES)  # nothing half-registered
