"""model=torchvision: any torchvision classification model, its head replaced, its stages found, its weights read."""

from __future__ import annotations

import logging
from collections import OrderedDict

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from caltech_cam.models import ClassifierModule, UnknownModelError, build_model, load_classifier
from caltech_cam.models.discovery import find_head, find_stages
from caltech_cam.run.build import model_preset
from tests.helpers import compose_train

# Hand-checked against each model's printout: the last module at each output resolution (128 px probe).
STAGES = {
    # stem ReLU at /2, then the four residual stages
    "resnet18": ("relu", "layer1", "layer2", "layer3", "layer4"),
    # features.0 stem /2; .1 /4; .2-.3 /8; .4-.8 /16; .9-.12 /32 (the last, a 1x1 conv to 576 channels)
    "mobilenet_v3_small": ("features.0", "features.1", "features.3", "features.8", "features.12"),
    # features.0 stem /4 and .1 stage 1; .2 downsample + .3 stage 2; ...; the 1x1 pooled output left out
    "convnext_tiny": ("features.1", "features.3", "features.5", "features.7"),
}
HEADS = {"resnet18": "fc", "mobilenet_v3_small": "classifier.3", "convnext_tiny": "classifier.2"}


@pytest.mark.parametrize("arch", sorted(STAGES))
def test_stages_and_head_are_found_from_the_downsampling_structure(arch: str) -> None:
    model = tvm.get_model(arch)
    assert find_stages(model) == STAGES[arch] and find_head(model) == HEADS[arch]
    module = ClassifierModule("torchvision", 5, arch=arch)
    assert module.cam_layers == list(STAGES[arch]) and module.head_prefixes == (HEADS[arch],)
    assert module.model.get_submodule(HEADS[arch]).out_features == 5
    # The head learns at the full rate, everything else is the backbone.
    head = {id(p) for p in module.model.get_submodule(HEADS[arch]).parameters()}
    assert {id(p) for p in module.head_parameters()} == head
    assert len(module.backbone_parameters()) == len(list(module.model.parameters())) - len(head)


def test_the_stage_walk_descends_into_the_one_child_that_downsamples() -> None:
    # body holds every resolution change; pool is 1x1 and left out; head is the last Linear.
    net = nn.Sequential(
        OrderedDict(
            body=nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 1)
            ),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            head=nn.Linear(4, 2),
        )
    )
    assert find_stages(net) == ("body.0", "body.3") and find_head(net) == "head"


def test_weights_path_loads_every_tensor_and_skips_a_head_of_another_class_count(tmp_path, caplog) -> None:
    torch.manual_seed(0)
    imagenet = tvm.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="caltech_cam.models"):
        module = ClassifierModule("torchvision", 4, arch="resnet18", pretrained=True, weights_path=str(path))
    own = module.model.state_dict()
    for key, value in imagenet.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert own["fc.weight"].shape == (4, 512)
    assert (
        "the weights' head fc has 1000 outputs, this one 4: its tensors are skipped (fc.weight, fc.bias)"
        in caplog.text
    )
    # A head of the same class count is the checkpoint's too.
    torch.save(module.model.state_dict(), path)
    again = ClassifierModule("torchvision", 4, arch="resnet18", pretrained=True, weights_path=str(path))
    assert torch.equal(again.model.fc.weight, own["fc.weight"])


def test_weights_that_do_not_fit_name_the_tensors(tmp_path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(tvm.resnet34().state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit ResNet: missing \[\].*unexpected \['layer1.2"):
        build_model("torchvision", 4, arch="resnet18", pretrained=True, weights_path=str(path))


def test_a_checkpoint_records_plain_values_and_loads_back(tmp_path) -> None:
    module = ClassifierModule(
        "torchvision", 3, ["a", "b", "c"], arch="mobilenet_v3_small", cam_layers=["features.12"]
    )
    path = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    loaded = load_classifier(path)  # weights_only=True
    assert loaded.hparams.arch == "mobilenet_v3_small" and loaded.cam_layers == ["features.12"]
    x = torch.randn(2, 3, 64, 64)
    module.eval()
    assert torch.equal(loaded(x), module(x))


def test_bad_names_get_the_valid_ones() -> None:
    with pytest.raises(
        UnknownModelError, match=r"'convnext_tiyn' is not a torchvision.*closest names: convnext_tiny"
    ):
        ClassifierModule("torchvision", 3, arch="convnext_tiyn")
    with pytest.raises(
        ValueError, match=r"'layer5'.*its stages are \['relu', 'layer1'.*closest module names: layer4"
    ):
        ClassifierModule("torchvision", 3, arch="resnet18", cam_layers=["layer5"])
    with pytest.raises(
        ValueError, match=r"model.head='fcc' is not a module of ResNet; closest module names: fc"
    ):
        ClassifierModule("torchvision", 3, arch="resnet18", head="fcc")
    with pytest.raises(ValueError, match=r"no nn.Linear to use as its classification head: .*model.head="):
        find_head(nn.Sequential(nn.Conv2d(3, 4, 1)))
    with pytest.raises(ValueError, match=r"model.kwargs.num_classes: the class count comes from the data"):
        build_model("torchvision", 3, arch="resnet18", kwargs={"num_classes": 10})
    with pytest.raises(
        ValueError, match=r"model.arch='resnet18' is only read by model=torchvision or model=timm"
    ):
        ClassifierModule("resnet50", 3, arch="resnet18")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # experiment=demo: 64 px through model.small_input, no crop, whatever the weights say
        (["experiment=demo"], ((0.485, 0.456, 0.406), 64, None)),
        # resnet50's DEFAULT weights (IMAGENET1K_V2) evaluate at resize 232, crop 224 (their transforms)
        ([], ((0.485, 0.456, 0.406), 232, 224)),
        (["data.crop=200"], ((0.485, 0.456, 0.406), 232, 200)),
        (["model.pretrained=false"], ((0.485, 0.456, 0.406), 256, 224)),
        (["model.pretrained=false", "data.resize=96", "data.crop=80"], ((0.485, 0.456, 0.406), 96, 80)),
    ],
)
def test_the_preset_is_the_weights_own_sized_by_the_data(overrides, expected) -> None:
    cfg = compose_train(["model=torchvision", "model.arch=resnet50", *overrides])
    preset = model_preset(cfg)
    assert (preset.name, preset.in_channels) == ("torchvision", 3)
    assert (preset.mean, preset.resize, preset.crop) == expected
    assert model_preset(compose_train(["model=resnet50"])) is None
