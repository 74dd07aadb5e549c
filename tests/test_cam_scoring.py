"""The CAM scoring orchestrator (cam/scoring.py): bootstrap CIs, subsets, and its numbers against direct calls."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torchvision

from caltech_cam.cam import localization as loc
from caltech_cam.cam.engine import compute_cams
from caltech_cam.cam.metrics import confidence_change, deletion_auc
from caltech_cam.cam.road import road_scores
from caltech_cam.cam.scoring import (
    METRICS,
    bootstrap_ci,
    check_layers_of,
    check_metrics,
    register_metric,
    score_cams,
    select_images,
)


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


def test_select_images() -> None:
    assert select_images(5, None, 0).tolist() == [0, 1, 2, 3, 4]
    picked = select_images(50, 8, seed=3)
    assert picked.tolist() == sorted(set(picked.tolist())) and len(picked) == 8
    assert torch.equal(picked, select_images(50, 8, seed=3)) and not torch.equal(
        picked, select_images(50, 8, 4)
    )
    with pytest.raises(ValueError, match=re.escape("cams.num_images=9 but the test split has only 8 images")):
        select_images(8, 9, 0, split="test")
    with pytest.raises(ValueError, match="positive int or null, got 0"):
        select_images(8, 0, 0)


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
        methods=["gradcam", "layer-cam"],
        layers=layers,
        metrics=["localization", "deletion"],
        boxes=(boxes, kept),
        present=kept,
        tolerance=2.0,
        resamples=200,
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
        methods=["gradcam"],
        layers=["layer3"],
        metrics=["confidence", "road"],
        seed=5,
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
        methods=["gradcam"],
        layers=["layer3"],
        target="predicted",
        metrics=["localization", "deletion"],
        resamples=50,
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
            methods=["gradcam"],
            layers=["layer3"],
            metrics=["map_mean"],
            resamples=50,
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
        check_layers_of(model, ["layer9"], ["layer4"])
    with pytest.raises(ValueError, match="unknown CAM method 'gradcan'; choose one of gradcam"):
        score_cams(model, [(images, labels)], methods=["gradcan"], layers=["layer3"])
    with pytest.raises(
        ValueError, match=re.escape("cams.target='truth'; expected one of ('label', 'predicted')")
    ):
        score_cams(model, [(images, labels)], methods=["gradcam"], layers=["layer3"], target="truth")
    with pytest.raises(ValueError, match="3 boxes for at least 5 scored images"):
        score_cams(
            model,
            [(images, labels)],
            methods=["gradcam"],
            layers=["layer3"],
            metrics=["localization"],
            boxes=(torch.zeros(3, 4), torch.ones(3, dtype=torch.bool)),
        )
