"""The one explainer: each output checked against the engine, the model, `make_grid` and `confidence_change`."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from caltech_cam.cam import (
    Explainable,
    Explainer,
    compute_cams,
    confidence_change,
    make_grid,
    overlay,
    require_explainable,
)
from caltech_cam.data.decode import load_rgb
from caltech_cam.data.presets import Preset, make_preset

LAYERS = ["layer2", "layer4"]
NAMES = ["ak47", "dog", "spider", "clutter"]

# Other jobs may share these 2 cores: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class Subject:
    """The least a module must have to be explained (no LightningModule needed)."""

    model: nn.Module
    cam_layers: list[str]
    class_names: list[str]
    preset: Preset


@pytest.fixture(scope="module")
def subject() -> Subject:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(NAMES)).eval()
    return Subject(model, ["layer3", "layer4"], NAMES, make_preset("resnet", resize=64))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_one_pass_gives_the_engines_maps_the_models_logits_and_top_k(subject, images):
    explainer = Explainer.of(subject, LAYERS, method="layercam")
    explained = explainer.explain(images)
    expected = compute_cams(subject.model, images, LAYERS, method="layercam")
    assert explained.layers == LAYERS and explained.method == "layercam"
    for layer in LAYERS:
        torch.testing.assert_close(explained.maps[layer], expected[layer], rtol=0, atol=0)
    with torch.no_grad():
        logits = subject.model(images)
    torch.testing.assert_close(explained.logits, logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(explained.targets, logits.argmax(dim=1))
    values, classes = explained.top(3)
    reference = logits.softmax(dim=1).topk(3, dim=1)
    torch.testing.assert_close(values, reference.values, rtol=1e-5, atol=1e-6)
    assert torch.equal(classes, reference.indices)
    assert explained.top(10)[0].shape == (3, len(NAMES))  # k is capped at the number of classes
    # The backdrops are the preset's view of the input, the overlays those of `overlay`.
    assert torch.equal(explained.backdrops, subject.preset.denormalize(images))
    for layer in LAYERS:
        assert torch.equal(explained.overlays[layer], overlay(explained.backdrops, expected[layer]))


def test_captions_say_true_predicted_and_asked_classes(subject, images):
    explainer = Explainer.of(subject, ["layer4"])
    with torch.no_grad():
        probabilities = subject.model(images).softmax(dim=1)
    p, c = probabilities.max(dim=1)
    plain = explainer.explain(images).captions
    assert plain == [f"pred: {NAMES[c[i]]} ({p[i].item():.1%})" for i in range(3)]
    labelled = explainer.explain(images, labels=[3, 0, 1], titles=["a.jpg", "b.png", "c.tif"]).captions
    assert labelled[1] == f"b.png\ntrue: ak47 / pred: {NAMES[c[1]]} ({p[1].item():.1%})"
    asked = explainer.explain(images, targets=[2, 2, 2])
    assert asked.targets.tolist() == [2, 2, 2]
    assert all(caption.endswith(" / map: spider") for caption in asked.captions)


def test_grid_is_make_grid_of_the_explanation_and_rows_select_images(subject, images):
    explained = Explainer.of(subject, LAYERS).explain(images)
    whole = make_grid(explained.backdrops, explained.maps, explained.captions)
    assert torch.equal(explained.grid(), whole)
    assert torch.equal(
        explained.grid(["layer4"]),
        make_grid(explained.backdrops, explained.maps, explained.captions, ["layer4"]),
    )
    one = {layer: m[1:2] for layer, m in explained.maps.items()}
    assert torch.equal(
        explained.grid(rows=[1]), make_grid(explained.backdrops[1:2], one, explained.captions[1:2])
    )


def test_faithfulness_equals_confidence_change_from_scratch(subject, images):
    explainer = Explainer.of(subject, LAYERS)
    explained = explainer.explain(images)
    ours = explainer.faithfulness(explained)
    theirs = confidence_change(subject.model, images, explained.maps)  # its own forward for the base scores
    for layer in LAYERS:
        for name in ("average_drop", "increase_in_confidence"):
            torch.testing.assert_close(ours[layer][name], theirs[layer][name], rtol=1e-5, atol=1e-4)


def test_explain_files_uses_the_presets_eval_transform_and_a_colour_backdrop(subject, tmp_path):
    paths = []
    for k, suffix in enumerate((".tif", ".webp")):
        picture = (torch.rand(3, 50 + 10 * k, 70) * 255).to(torch.uint8)
        paths.append(tmp_path / f"p{k}{suffix}")
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(paths[-1])
    explainer = Explainer.of(subject, ["layer4"])
    explained = explainer.explain_files(paths)
    raw = [load_rgb(p) for p in paths]
    transform = subject.preset.transform(train=False)
    by_hand = explainer.explain(
        torch.stack([transform(r) for r in raw]),
        backdrops=torch.stack([subject.preset.eval_view(r) for r in raw]),
        titles=["p0.tif", "p1.webp"],
    )
    assert torch.equal(explained.images, by_hand.images)
    assert torch.equal(explained.maps["layer4"], by_hand.maps["layer4"])
    assert explained.captions == by_hand.captions and explained.captions[0].startswith("p0.tif\npred: ")


def test_bad_configuration_fails_when_built_not_when_run(subject, images):
    calls = []
    handle = subject.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(
            ValueError,
            match=r"unknown layer 'layer9'; the model's CAM layers are \['layer3', 'layer4'\]; valid names: conv1",
        ):
            Explainer.of(subject, ["layer4", "layer9"])
        with pytest.raises(ValueError, match=r"unknown CAM method 'gradcam3'; choose one of gradcam"):
            Explainer.of(subject, method="gradcam3")
        with pytest.raises(ValueError, match=r"unknown colormap 'nope'"):
            Explainer.of(subject, colormap="nope")
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 2"):
            Explainer.of(subject, alpha=2)
        bare = Explainer(subject.model, ["layer4"])
        with pytest.raises(ValueError, match=r"pass backdrops="):
            bare.explain(images)
        with pytest.raises(ValueError, match=r"backdrops must be uint8 \(3, 3, 64, 64\), got torch.float32"):
            bare.explain(images, backdrops=torch.zeros(3, 3, 64, 64))
        with pytest.raises(ValueError, match=r"2 labels for 3 images"):
            Explainer.of(subject, ["layer4"]).explain(images, labels=[0, 1])
        assert calls == []  # each error came before any forward
        assert Explainer.of(subject, method="GradCAM++").method.name == "gradcampp"
        assert Explainer.of(subject).layers == ["layer3", "layer4"]  # the module's own layers by default
    finally:
        handle.remove()


def test_the_protocol_names_what_a_module_lacks(subject):
    assert isinstance(subject, Explainable)
    assert require_explainable(subject, "me") is subject

    class Partial:
        model = subject.model
        class_names = NAMES

    assert not isinstance(Partial(), Explainable)
    with pytest.raises(TypeError, match=r"GradCAMLogger needs .* Partial has no \.cam_layers, \.preset$"):
        require_explainable(Partial(), "GradCAMLogger")
