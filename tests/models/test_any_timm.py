"""model=timm: any timm model, its stages from feature_info, its preset from pretrained_cfg, weights read offline."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from caltech_cam.models import ClassifierModule, any_timm
from caltech_cam.run.build import model_preset
from tests.helpers import compose_train, require

timm = require("timm", "timm")


def test_stages_head_and_preset_come_from_timm() -> None:
    module = ClassifierModule("timm", 4, arch="resnet18")
    # resnet18's feature_info: the stem activation, then the four stages; its classifier is fc.
    assert module.cam_layers == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert module.head_prefixes == ("fc",) and module.model.fc.out_features == 4
    # resnet18.a1_in1k: ImageNet statistics, 224 px at crop_pct 0.95 -> resize floor(224 / 0.95) = 235.
    assert (module.preset.mean, module.preset.resize, module.preset.crop) == ((0.485, 0.456, 0.406), 235, 224)
    demo = model_preset(compose_train(["experiment=demo", "model=timm", "model.arch=resnet18"]))
    assert (demo.resize, demo.crop) == (64, None)


def test_weights_path_goes_through_timm_and_skips_the_head(tmp_path, caplog) -> None:
    torch.manual_seed(0)
    imagenet = timm.create_model("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="caltech_cam.models"):
        module = ClassifierModule("timm", 4, arch="resnet18", pretrained=True, weights_path=str(path))
    own = module.model.state_dict()
    for key, value in imagenet.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert own["fc.weight"].shape == (4, 512)
    assert "resnet18: the weights' head has 1000 outputs, this one 4: its tensors are skipped" in caplog.text


def test_errors_name_the_remedy(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"'resnet81' is not a timm.*closest names: resnet18"):
        ClassifierModule("timm", 3, arch="resnet81")
    any_timm.names.cache_clear()
    monkeypatch.setitem(sys.modules, "timm", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'caltech_cam\[timm\]'"):
            ClassifierModule("timm", 3, arch="resnet18")
    finally:
        any_timm.names.cache_clear()
