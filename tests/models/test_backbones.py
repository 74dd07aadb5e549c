"""Backbones: shapes and gradients, weight compatibility, the gray stem, Inception's aux head, Table 2, errors."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn
from torchvision.models import inception_v3, resnet50

from caltech_cam.data import PRESET_NAMES
from caltech_cam.models import (
    MODEL_SPECS,
    MissingWeightsError,
    ModelSpec,
    UnknownModelError,
    build_model,
    register_model,
)
from caltech_cam.models.weights import RESNET50_WEIGHTS, hub_cache_path, sum_input_channels, under
from caltech_cam.run.config import config_dir

NUM_CLASSES = 5
# torchvision's published ImageNet statistics, written out as the oracle (not imported from the code under test).
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _randomize_bn_stats(model: nn.Module) -> None:
    """Non-trivial running statistics, so an eval comparison also checks that BN buffers were loaded."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)


@pytest.fixture(scope="module")
def tv_resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A random torchvision resnet50 (eval) and its state dict saved as a file, standing in for ImageNet weights."""
    torch.manual_seed(0)
    model = resnet50(weights=None)
    _randomize_bn_stats(model)
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def _capture(model: nn.Module, names: tuple[str, ...], x: Tensor) -> tuple[object, dict[str, Tensor]]:
    """Run `model(x)` and return its output with the outputs of the named modules (removing the hooks after)."""
    modules = dict(model.named_modules())
    seen: dict[str, Tensor] = {}
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: seen.__setitem__(n, out.detach()))
        for n in names
    ]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, seen


# (in_channels, image size, {cam layer: (channels, spatial side)}, head parameters): sizes worked out by hand.
# ResNet at 64 px: stem /4 -> 16, then /2 per stage (layer1 keeps stride 1). Inception-v3 at 75 px:
# 37 -> 35 -> 35 -> pool 17 -> 17 -> 15 -> pool 7 (Mixed_5d) -> 3 (Mixed_6e) -> 1 (Mixed_7c).
# Table 2 at 75 px: 37 -> 35 -> 35 -> pool 17 (3a, 3b) -> pool 8 (4a, 4b).
RESNET_LAYERS = {"layer1": (256, 16), "layer2": (512, 8), "layer3": (1024, 4), "layer4": (2048, 2)}
CASES = {
    "resnet50": (3, 64, RESNET_LAYERS, {"fc.weight", "fc.bias"}),
    "my_resnet50": (
        3,
        64,
        RESNET_LAYERS,
        {"head.0.weight", "head.0.bias", "classifier.weight", "classifier.bias"},
    ),
    "inception_v3": (
        1,
        75,
        {"Mixed_5d": (288, 7), "Mixed_6e": (768, 3), "Mixed_7c": (2048, 1)},
        {"fc.weight", "fc.bias"},
    ),
    "my_inception_v3": (
        1,
        75,
        {
            "inception3a": (256, 17),
            "inception3b": (288, 17),
            "inception4a": (288, 8),
            "inception4b": (288, 8),
        },
        {"fc.weight", "fc.bias"},
    ),
}


def test_specs_are_consistent() -> None:
    study = {name: spec for name, spec in MODEL_SPECS.items() if spec.library is None}
    assert set(study) == set(CASES)
    for name, spec in study.items():
        assert isinstance(spec, ModelSpec) and spec.name == name
        assert spec.preset in spec.allowed_presets
        assert spec.in_channels == ((CASES[name][0],) if name.endswith("resnet50") else (1, 3))
        assert spec.cam_layers == tuple(CASES[name][2])
    assert MODEL_SPECS["inception_v3"].preset == "inception" and MODEL_SPECS["resnet50"].preset == "resnet"
    # A preset fixes the channels (resnet 3, inception 1): the allowed presets follow from the stem's channels.
    assert MODEL_SPECS["resnet50"].allowed_presets == ("resnet",)
    assert set(MODEL_SPECS["inception_v3"].allowed_presets) == set(PRESET_NAMES)
    spec = MODEL_SPECS["inception_v3"]
    assert spec.is_head("AuxLogits.fc.weight") and spec.is_head("fc.bias") and spec.is_head("fc")
    assert not spec.is_head("AuxLogits.conv0.conv.weight") and not spec.is_head("fcx.weight")
    assert under("AuxLogits.fc.weight", ("AuxLogits",)) and not under("AuxLogitsX.fc", ("AuxLogits",))


def test_every_model_config_matches_its_registration() -> None:
    """conf/model/<name>.yaml names a registered model and its default preset; every model has one."""
    files = {p.stem: OmegaConf.load(p) for p in (config_dir() / "model").glob("*.yaml")}
    assert set(files) == set(MODEL_SPECS)
    for name, node in files.items():
        assert node.model_name == name and node.preset == MODEL_SPECS[name].preset, name


def test_a_new_backbone_is_one_registration() -> None:
    """Registering a builder makes it buildable, with its declared facts, and a ClassifierModule wraps it."""
    from caltech_cam.models.classifier import ClassifierModule

    @register_model("tiny_test_net", preset="inception", in_channels=(1,), cam_layers=("body",), head=("fc",))
    def build_tiny(num_classes: int, *, in_channels: int, **_: object) -> nn.Module:
        return nn.Sequential(
            OrderedDict(
                body=nn.Conv2d(in_channels, 4, 3),
                pool=nn.AdaptiveAvgPool2d(1),
                flat=nn.Flatten(),
                fc=nn.Linear(4, num_classes),
            )
        )

    try:
        spec = MODEL_SPECS["tiny_test_net"]
        assert (spec.build, spec.allowed_presets, spec.head_prefixes) == (build_tiny, ("inception",), ("fc",))
        module = ClassifierModule("tiny_test_net", 3, preset={"name": "inception", "resize": 16})
        assert module.cam_layers == ["body"] and module.preset.in_channels == 1
        assert [id(p) for p in module.head_parameters()] == [id(p) for p in module.model.fc.parameters()]
        assert module(torch.zeros(2, 1, 14, 14)).shape == (2, 3)
        with pytest.raises(ValueError, match=r"tiny_test_net.*cannot take preset 'resnet'.*\['inception'\]"):
            ClassifierModule("tiny_test_net", 3, preset="resnet")
        with pytest.raises(ValueError, match="registered twice"):
            register_model("tiny_test_net", preset="inception", in_channels=(1,), cam_layers=(), head=())(
                build_tiny
            )
    finally:
        del MODEL_SPECS["tiny_test_net"]
    # A default preset the stem cannot take is refused when the model registers, not when a run starts.
    with pytest.raises(ValueError, match=r"cannot take preset 'resnet' \(the default preset of rgb_less\)"):
        register_model("rgb_less", preset="resnet", in_channels=(1,), cam_layers=(), head=())(build_tiny)
    assert "rgb_less" not in MODEL_SPECS


@pytest.mark.parametrize("name", list(CASES))
def test_forward_backward_and_cam_layers(name: str) -> None:
    in_channels, size, layers, head_params = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES, in_channels=in_channels, image_size=size).train()
    spec = MODEL_SPECS[name]
    assert {n for n, _ in model.named_parameters() if spec.is_head(n)} == head_params

    x = torch.randn(2, in_channels, size, size)
    logits, acts = _capture(model, spec.cam_layers, x)
    assert isinstance(logits, Tensor) and logits.shape == (2, NUM_CLASSES)
    assert {n: (a.dim(), a.shape[1], a.shape[2], a.shape[3]) for n, a in acts.items()} == {
        n: (4, c, s, s) for n, (c, s) in layers.items()
    }
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []

    model.eval()  # Inception-v3 must evaluate down to 75 px
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, Tensor) and out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()


def test_my_resnet50_loads_torchvision_weights(
    tv_resnet: tuple[nn.Module, Path], caplog: pytest.LogCaptureFixture
) -> None:
    tv, path = tv_resnet
    with caplog.at_level(logging.INFO, logger="caltech_cam.models"):
        mine = build_model("my_resnet50", NUM_CLASSES, pretrained=True, weights_path=str(path)).eval()
    spec = MODEL_SPECS["my_resnet50"]
    # The log says where the weights came from and how much of the model they cover (all but the new head).
    head = sum(p.numel() for n, p in mine.named_parameters() if spec.is_head(n))
    total = sum(p.numel() for p in mine.parameters())
    copied = 100 * (total - head) / total
    assert f"Pretrained weights: a state dict from {path}" in caplog.text
    assert f"MyResNet50: pretrained weights loaded: copied {copied:.1f} %, folded 0.0 %, " in caplog.text
    assert f"fresh {100 - copied:.1f} % of {total:,} parameters" in caplog.text
    # Same backbone keys as torchvision's resnet50: only the heads differ.
    assert {k for k in mine.state_dict() if not spec.is_head(k)} == set(tv.state_dict()) - {
        "fc.weight",
        "fc.bias",
    }

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, pooled = _capture(tv, ("avgpool",), x)
        features = torch.flatten(pooled["avgpool"], 1)
        torch.testing.assert_close(mine.forward_features(x), features, rtol=1e-5, atol=1e-5)
        # torchvision's backbone followed by our FC-512 head gives our logits.
        torch.testing.assert_close(mine(x), mine.classifier(mine.head(features)), rtol=1e-5, atol=1e-5)


def test_resnets_load_from_the_hub_cache(
    tv_resnet: tuple[nn.Module, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tv, path = tv_resnet
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert hub_cache_path(RESNET50_WEIGHTS) == cached
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached file should have been used")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    model = build_model("resnet50", NUM_CLASSES, pretrained=True)
    expected = tv.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("fc."):
            assert value.shape[0] == NUM_CLASSES
        else:
            assert torch.equal(value, expected[key]), key
    mine = build_model("my_resnet50", NUM_CLASSES, pretrained=True)
    assert torch.equal(mine.layer3[5].conv2.weight, tv.layer3[5].conv2.weight)


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("resnet50", "resnet50-11ad3fa6.pth"),
        ("my_resnet50", "resnet50-11ad3fa6.pth"),
        ("inception_v3", "inception_v3_google-0cc3c7bd.pth"),
        ("my_inception_v3", "inception_v3_google-0cc3c7bd.pth"),
    ],
)
def test_missing_weights_name_the_file(
    name: str, file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    real_download = torch.hub.download_url_to_file

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        # An unreachable address stands in for "no network", without ever hanging on a real one.
        real_download("file:///nonexistent/" + Path(url).name, dst, *args, **kwargs)

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MissingWeightsError) as info:
        build_model(name, NUM_CLASSES, pretrained=True)
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / file) in message
    assert f"model.weights_path=/path/to/{file}" in message


def test_gray_stem_equals_rgb_stem_on_replicated_gray() -> None:
    torch.manual_seed(0)
    weight = torch.randn(32, 3, 3, 3)
    gray = torch.rand(2, 1, 21, 21)
    torch.testing.assert_close(
        F.conv2d(gray, sum_input_channels(weight, 1), stride=2),
        F.conv2d(gray.expand(-1, 3, -1, -1), weight, stride=2),
    )
    assert sum_input_channels(weight, 3) is weight
    with pytest.raises(ValueError, match="2 input channels"):
        sum_input_channels(weight, 2)


def test_gray_inception_matches_pretrained_rgb_inception(tmp_path: Path) -> None:
    """Gray ×3, ImageNet-normalized, through torchvision's model with transform_input == our 1-channel model."""
    torch.manual_seed(0)
    reference = inception_v3(weights=None, aux_logits=True, init_weights=True, transform_input=True)
    _randomize_bn_stats(reference)
    path = tmp_path / "inception.pth"
    torch.save(reference.state_dict(), path)
    gray_mean, gray_std = 0.45, 0.22
    gray = build_model(
        "inception_v3", NUM_CLASSES, in_channels=1, pretrained=True, weights_path=str(path),
        image_size=96, input_mean=(gray_mean,), input_std=(gray_std,),
    ).eval()  # fmt: skip
    rgb = build_model(
        "inception_v3", NUM_CLASSES, in_channels=3, pretrained=True, weights_path=str(path), image_size=96
    ).eval()
    assert gray.Conv2d_1a_3x3.conv.weight.shape == (32, 1, 3, 3)
    rgb.fc.load_state_dict(gray.fc.state_dict())
    reference.fc = gray.fc
    reference.eval()

    image = torch.rand(2, 1, 96, 96)
    color = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected = reference((image.expand(-1, 3, -1, -1) - IMAGENET_MEAN) / IMAGENET_STD)
        got = gray((image - gray_mean) / gray_std)
        expected_rgb = reference((color - IMAGENET_MEAN) / IMAGENET_STD)
        got_rgb = rgb((color - IMAGENET_MEAN) / IMAGENET_STD)
    # Random Inception weights blow activations up (~1e7): compare relative to the logits' scale.
    for want, have in ((expected, got), (expected_rgb, got_rgb)):
        assert (have - want).abs().max() <= 1e-4 * want.abs().max()
        assert want.std() > 0

    # A checkpoint reloads into a model built without weights: the input affine travels in the state dict.
    rebuilt = build_model("inception_v3", NUM_CLASSES, in_channels=1, image_size=96)
    rebuilt.load_state_dict(gray.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()((image - gray_mean) / gray_std), got)


def test_inception_aux_off_below_299(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="caltech_cam.models"):
        model = build_model("inception_v3", NUM_CLASSES, in_channels=1, image_size=224).train()
    assert model.AuxLogits is None and not model.aux_logits
    assert "aux head is turned off" in caplog.text and "224" in caplog.text
    with torch.no_grad():  # a training-mode forward: torchvision's aux head would crash here
        out = model(torch.randn(2, 1, 224, 224))
    assert isinstance(out, Tensor) and out.shape == (2, NUM_CLASSES)


def test_inception_aux_on_at_299() -> None:
    model = build_model("inception_v3", NUM_CLASSES, in_channels=1, image_size=299).train()
    heads = ("fc", "AuxLogits")
    # Only the heads train here: the backward stops at them, which keeps this 299 px step cheap.
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".")[0] in heads)
    logits, aux = model(torch.randn(2, 1, 299, 299))
    assert logits.shape == aux.shape == (2, NUM_CLASSES)
    target = torch.tensor([1, 4])
    (F.cross_entropy(logits, target) + 0.4 * F.cross_entropy(aux, target)).backward()
    for name in (
        "fc.weight",
        "AuxLogits.fc.weight",
        "AuxLogits.conv0.conv.weight",
        "AuxLogits.conv1.conv.weight",
    ):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 96, 96))
    assert isinstance(out, Tensor) and out.shape == (1, NUM_CLASSES)


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("vgg16", {}, UnknownModelError, "allowed: inception_v3, my_inception_v3, my_resnet50, resnet50"),
        ("resnet50", {"in_channels": 1}, ValueError, r"resnet50 takes in_channels in \(3,\)"),
        ("my_inception_v3", {"in_channels": 2}, ValueError, r"in_channels in \(1, 3\)"),
        ("my_inception_v3", {"options": {"block": "v4"}}, ValueError, r"model.options.block='v4' is not"),
        ("my_resnet50", {"options": {"batch_norm": True}}, ValueError, "has no option 'batch_norm'"),
        ("resnet50", {"num_classes": 0}, ValueError, "num_classes"),
        ("resnet50", {"weights_path": "w.pth"}, ValueError, "only read with pretrained=True"),
        (
            "resnet50",
            {"pretrained": True, "weights_path": "/nonexistent/w.pth"},
            FileNotFoundError,
            "no such file",
        ),
        (
            "inception_v3",
            {"in_channels": 1, "input_mean": (0.5, 0.5, 0.5)},
            ValueError,
            "3 values for 1 input",
        ),
        ("inception_v3", {"in_channels": 1, "pretrained": True}, ValueError, "input_mean/input_std"),
    ],
)
def test_bad_arguments(name: str, kwargs: dict, error: type[Exception], match: str) -> None:
    kwargs = {"num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(error, match=match):
        build_model(name, **kwargs)


def test_weights_that_do_not_fit_are_refused(tv_resnet: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, path = tv_resnet
    with pytest.raises(ValueError, match="does not fit InceptionV3: missing"):
        build_model("inception_v3", NUM_CLASSES, pretrained=True, weights_path=str(path))
    with pytest.raises(
        ValueError, match=r"does not fit torchvision's Inception-v3.*missing \['Conv2d_1a_3x3"
    ):
        build_model("my_inception_v3", NUM_CLASSES, pretrained=True, weights_path=str(path))
    checkpoint = tmp_path / "lightning.ckpt"
    torch.save({"epoch": 3, "state_dict": {}}, checkpoint)
    with pytest.raises(ValueError, match="not a plain state dict"):
        build_model("resnet50", NUM_CLASSES, pretrained=True, weights_path=str(checkpoint))
