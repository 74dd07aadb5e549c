"""The CAM scoring orchestrator (cam/scoring.py): bootstrap CIs, subsets, and its numbers against direct calls."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torchvision

from caltech_cam.cam.engine import check_layers, compute_cams
from caltech_cam.cam.methods import METHODS, default_methods, register
from caltech_cam.cam.metrics import localization as loc
from caltech_cam.cam.metrics.faithfulness import confidence_change, deletion_auc
from caltech_cam.cam.metrics.registry import METRICS, check_metrics, default_metrics, register_metric
from caltech_cam.cam.metrics.road import road_scores
from caltech_cam.cam.scoring import BoxSet, ScoringSpec, bootstrap_ci, score_cams, select_images


def test_bootstrap_ci_against_numpy_with_the_same_draws() -> None:
    values = torch.tensor([0.1, 0.5, float("nan"), 0.9, 0.2, 0.2, 0.7])
    mean, low, high, n = bootstrap_ci(values, resamples=500, level=0.9, seed=7)
    finite = values[values.isfinite()].double()
    index = torch.randint(6, (500, 6), generator=torch.Generator().manual_seed(7)).numpy()
    means = finite.numpy()[index].mean(axis=1)
    assert n == 6 and mean == pytest.approx(finite.mean().item())
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [5, 95])), abs=1e-12)
    # Hand cases: a constant sample and a single value have a zero-width interval; no value gives NaNs.
    assert bootstrap_ci(torch.full((9,), 0.25)) == pytest.approx((0.25, 0.25, 0.25, 9))
    assert bootstrap_ci(torch.tensor([3.0])) == pytest.approx((3.0, 3.0, 3.0, 1))
    assert bootstrap_ci(torch.tensor([float("nan")]))[3] == 0


def test_select_images_one_rule_for_explicit_and_default_counts() -> None:
    assert select_images(5, None, 0)[0].tolist() == [0, 1, 2, 3, 4]
    picked, note = select_images(50, 8, seed=3)
    assert picked.tolist() == sorted(set(picked.tolist())) and len(picked) == 8 and note is None
    # The draw is a seeded permutation's first N, sorted (its own generator: the global RNG is untouched).
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(3))[:8].sort().values
    assert torch.equal(picked, expected)
    assert not torch.equal(picked, select_images(50, 8, 4)[0])
    # An explicit count larger than the split is an error naming both numbers ...
    with pytest.raises(ValueError, match=re.escape("cams.num_images=9 but the test split has only 8 images")):
        select_images(8, 9, 0, what="the test split", key="cams.num_images")
    with pytest.raises(ValueError, match="positive int or null, got 0"):
        select_images(8, 0, 0)
    # ... a default larger than the split clamps to it, with one note line; a smaller default draws it.
    every, note = select_images(7, None, 0, default=64, what="the validation set")
    assert every.tolist() == list(range(7))
    assert note == "64 images by default, but the validation set has only 7: all of them are used"
    drawn, note = select_images(100, None, 3, default=10)
    assert torch.equal(drawn, select_images(100, 10, 3)[0]) and note is None


def test_defaults_are_read_from_the_registries() -> None:
    """`cams.methods: null` / `cams.metrics: null` mean the registered defaults; a method registered as
    non-default is left out of them but runs when named."""
    assert default_methods() == [name for name, m in METHODS.items() if m.default]
    assert set(default_methods()) >= {"gradcam", "hirescam", "eigencam"}
    assert default_metrics()[-1] == "sanity" and set(default_metrics()) >= {"localization", "road"}
    spec = ScoringSpec(layers=["layer3"])
    assert spec.methods == default_methods() and spec.metrics == default_metrics()

    @register("costly_test_method", default=False)
    def costly(activations, gradients):
        return activations.mean(dim=1)

    try:
        assert "costly_test_method" not in default_methods()
        assert ScoringSpec(layers=["layer3"]).methods == default_methods()
        assert ScoringSpec(layers=["layer3"], methods=["costly_test_method"]).methods == [
            "costly_test_method"
        ]
    finally:
        METHODS.pop("costly_test_method")
        from caltech_cam.cam.methods import ALIASES

        ALIASES.pop("costlytestmethod")


@pytest.fixture(scope="module")
def setup(one_thread):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    images = torch.randn(5, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 0, 1])
    boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0]] * 4 + [[float("nan")] * 4])
    kept = torch.tensor([True, True, True, True, False])
    return model, images, labels, boxes, kept


def test_scores_equal_direct_metric_calls(setup) -> None:
    model, images, labels, boxes, kept = setup
    layers = ["layer2", "layer3"]
    batches = [(images[:3], labels[:3]), (images[3:], labels[3:])]  # two chunks
    result = score_cams(
        model,
        batches,
        ScoringSpec(
            methods=["gradcam", "layer-cam"],
            layers=layers,
            metrics=["localization", "deletion"],
            tolerance=2.0,
            resamples=200,
        ),
        BoxSet(boxes, kept, present=kept),
    )
    rows = {(r["layer"], r["method"], r["metric"]): r for r in result.rows}
    masks = loc.box_masks(boxes, (32, 32))
    for method in ("gradcam", "layercam"):
        maps = compute_cams(model, images, layers, method=method, targets=labels)
        for layer in layers:
            direct = loc.localization_scores(maps[layer][:4], masks[:4], 2.0)
            for column, values in direct.items():
                row = rows[(layer, method, column)]
                assert row["mean"] == pytest.approx(values.float().nanmean().item(), abs=1e-6)
                assert (row["n"], row["excluded"]) == (4, 1)
            auc = deletion_auc(model, images, maps[layer], labels)
            assert rows[(layer, method, "deletion_auc")]["mean"] == pytest.approx(auc.mean().item(), abs=1e-6)
            assert rows[(layer, method, "deletion_auc")]["ci_low"] <= auc.mean().item()
    # The centre baseline is scored the same way and repeated in each layer's table.
    centre = loc.localization_scores(loc.centre_baseline(4, (32, 32)), masks[:4], 2.0)["pointing_game_tol0"]
    for layer in layers:
        assert rows[(layer, "centre", "pointing_game_tol0")]["mean"] == pytest.approx(centre.mean().item())
    assert (
        "1 of 5 images excluded (1 without a box (e.g. clutter), 0 with the box cropped away)"
        in result.notes[0]
    )
    assert all(r["runtime_s"] >= 0 for r in result.rows) and result.runtime["engine"] > 0


def test_confidence_and_road_equal_direct_calls(setup) -> None:
    model, images, labels, _, _ = setup
    result = score_cams(
        model,
        [(images, labels)],
        ScoringSpec(methods=["gradcam"], layers=["layer3"], metrics=["confidence", "road"], seed=5),
    )
    rows = {(r["method"], r["metric"]): r for r in result.rows}
    maps = compute_cams(model, images, ["layer3"], targets=labels)["layer3"]
    confidence = confidence_change(model, images, {"m": maps}, labels, reduce=False)["m"]
    for column, values in confidence.items():
        assert rows[("gradcam", column)]["mean"] == pytest.approx(values.mean().item(), abs=1e-5)
    # The first map of the first chunk gets ROAD's noise generator fresh, seeded with seed + 1.
    road = road_scores(model, images, maps, labels, generator=torch.Generator().manual_seed(6))
    for column, values in road.items():
        assert rows[("gradcam", column)]["mean"] == pytest.approx(values.mean().item(), abs=1e-5)
    assert rows[("gradcam", "road")]["mean"] == pytest.approx(
        (rows[("gradcam", "road_lerf")]["mean"] - rows[("gradcam", "road_morf")]["mean"]) / 2, abs=1e-6
    )
    assert {("centre", "road"), ("uniform", "average_drop")} <= set(rows)


def test_without_boxes_localization_is_skipped_with_a_note_and_predicted_targets(setup) -> None:
    model, images, labels, _, _ = setup
    result = score_cams(
        model,
        [(images[:2], labels[:2])],
        ScoringSpec(
            methods=["gradcam"],
            layers=["layer3"],
            target="predicted",
            metrics=["localization", "deletion"],
            resamples=50,
        ),
    )
    assert {r["metric"] for r in result.rows} == {"deletion_auc"}
    assert result.notes == [
        "localization skipped: the split has no boxes (boxes.json); its columns are not reported"
    ]
    predicted = model(images[:2]).argmax(dim=1)
    maps = compute_cams(model, images[:2], ["layer3"], targets=predicted)["layer3"]
    expected = deletion_auc(model, images[:2], maps, predicted).mean().item()
    row = next(r for r in result.rows if r["method"] == "gradcam")
    assert row["mean"] == pytest.approx(expected, abs=1e-6)


def test_a_new_metric_is_one_function(setup) -> None:
    model, images, labels, _, _ = setup

    @register_metric("map_mean", {"map_mean": "higher"})
    def map_mean(batch):
        return {"map_mean": batch.maps.mean(dim=(1, 2))}

    try:
        result = score_cams(
            model,
            [(images, labels)],
            ScoringSpec(methods=["gradcam"], layers=["layer3"], metrics=["map_mean"], resamples=50),
        )
        maps = compute_cams(model, images, ["layer3"], targets=labels)["layer3"]
        row = next(r for r in result.rows if r["method"] == "gradcam")
        assert row["mean"] == pytest.approx(maps.mean().item(), abs=1e-6) and row["n"] == 5
        centre = next(r for r in result.rows if r["method"] == "centre")
        assert centre["mean"] == pytest.approx(loc.centre_baseline(1, (32, 32)).mean().item(), abs=1e-6)
    finally:
        METRICS.pop("map_mean")


def test_bad_settings_name_what_exists(setup) -> None:
    model, images, labels, _, _ = setup
    with pytest.raises(ValueError, match="unknown CAM metric 'roads'; choose from localization, confidence"):
        check_metrics(["roads"])
    with pytest.raises(
        ValueError, match=re.escape("unknown layer 'layer9'; the model's CAM layers are ['layer4']")
    ):
        check_layers(model, ["layer9"], ["layer4"])
    with pytest.raises(ValueError, match="unknown layer 'layer9'; valid names: conv1"):
        score_cams(model, [(images, labels)], ScoringSpec(layers=["layer9"]))
    with pytest.raises(ValueError, match="unknown CAM method 'gradcan'; choose one of gradcam"):
        ScoringSpec(methods=["gradcan"], layers=["layer3"])
    with pytest.raises(ValueError, match="no CAM method named"):
        ScoringSpec(methods=[], layers=["layer3"])
    with pytest.raises(
        ValueError, match=re.escape("cams.target='truth'; expected one of ('label', 'predicted')")
    ):
        ScoringSpec(methods=["gradcam"], layers=["layer3"], target="truth")
    with pytest.raises(ValueError, match=re.escape("cams.resamples=0; expected a positive int")):
        ScoringSpec(layers=["layer3"], resamples=0)
    with pytest.raises(ValueError, match="3 boxes for at least 5 scored images"):
        score_cams(
            model,
            [(images, labels)],
            ScoringSpec(methods=["gradcam"], layers=["layer3"], metrics=["localization"]),
            BoxSet(torch.zeros(3, 4), torch.ones(3, dtype=torch.bool)),
        )
