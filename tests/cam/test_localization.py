"""Localization scores: hand-computed cases, box geometry against torchvision's own resize/crop, Quantus where it is
right (and the case where it is not), and the localization experiment's centre baseline."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from caltech_cam.cam.metrics import localization as loc
from caltech_cam.cam.metrics.localization import (
    BASELINES,
    box_masks,
    centre_baseline,
    default_tolerance,
    dilate,
    energy_pointing_game,
    localization_scores,
    map_boxes,
    pointing_game,
    relevance_mass,
    relevance_rank,
    uniform_baseline,
)
from caltech_cam.data import generate_synthetic
from caltech_cam.data.boxes import ImageBoxes
from caltech_cam.data.presets import make_preset
from caltech_cam.data.synthetic.draw import OBJECT_SPECS, render_image
from tests.helpers import compose_train

SIZE = (20, 20)
# Pixels 5..9 in both directions: 25 of 400 pixels.
BOX = torch.tensor([[5.0, 5.0, 10.0, 10.0]])


def _peak_map(row: int, col: int, size: tuple[int, int] = SIZE) -> torch.Tensor:
    m = torch.zeros(1, *size)
    m[0, row, col] = 1.0
    return m


def _mask(box: torch.Tensor = BOX, size: tuple[int, int] = SIZE) -> torch.Tensor:
    return box_masks(box, size)


# ------------------------------------------------------------------------------------------------ box masks
def test_box_mask_counts_pixels_whose_centre_is_inside_half_open():
    mask = box_masks(torch.tensor([[4.5, 2.0, 9.5, 3.6], [0.0, 0.0, 0.49, 1.0]]), (6, 12))
    # Columns: centres 4.5 .. 8.5 lie in [4.5, 9.5); 9.5 is excluded. Rows: centres 2.5 and 3.5 lie in [2, 3.6).
    expected = torch.zeros(6, 12, dtype=torch.bool)
    expected[2:4, 4:9] = True
    assert torch.equal(mask[0], expected)
    # A box narrower than the first pixel's centre covers no pixel.
    assert not mask[1].any()
    assert not box_masks(torch.full((1, 4), math.nan), (4, 4)).any()


# -------------------------------------------------------------------------------------------- pointing game
def test_pointing_game_at_the_tolerance_boundary():
    mask = _mask()
    # (row 7, col 13) is 4 px right of the box's edge pixel (7, 9): in at tolerance 4, out just below.
    assert pointing_game(_peak_map(7, 13), mask, 4.0).item() == 1.0
    assert pointing_game(_peak_map(7, 13), mask, 3.999).item() == 0.0
    # (12, 12) is sqrt(3^2 + 3^2) = 4.2426 from the corner pixel (9, 9).
    assert pointing_game(_peak_map(12, 12), mask, 4.25).item() == 1.0
    assert pointing_game(_peak_map(12, 12), mask, 4.24).item() == 0.0
    # The box's own edge pixel is a hit at tolerance 0, its outside neighbour only from tolerance 1.
    assert pointing_game(_peak_map(9, 9), mask).item() == 1.0
    assert pointing_game(_peak_map(10, 9), mask).item() == 0.0
    assert pointing_game(_peak_map(10, 9), mask, 1.0).item() == 1.0


def test_dilation_is_the_euclidean_disc_around_the_mask():
    torch.manual_seed(0)
    masks = torch.rand(3, 17, 23) > 0.97
    masks[2] = False
    for radius in (0.0, 1.0, 1.5, 2.0, 3.7, 6.0):
        got = dilate(masks, radius)
        # Brute force over all pixel pairs: some mask pixel within radius (inclusive).
        ys, xs = torch.meshgrid(torch.arange(17), torch.arange(23), indexing="ij")
        pts = torch.stack([ys.flatten(), xs.flatten()], 1).float()
        d2 = torch.cdist(pts, pts) ** 2  # (P, P)
        near = (d2 <= radius**2 + 1e-9)[None] & masks.flatten(1)[:, None, :]
        assert torch.equal(got, near.any(-1).view_as(masks)), radius


def test_default_tolerance_is_15_px_at_224():
    assert default_tolerance(224) == 15.0
    assert default_tolerance(64) == pytest.approx(15 * 64 / 224)


def test_tied_maxima_score_their_fraction_inside():
    m = torch.zeros(1, *SIZE)
    m[0, 6, 6] = m[0, 15, 15] = m[0, 0, 0] = m[0, 9, 5] = 1.0  # two of the four maxima lie in the box
    assert pointing_game(m, _mask()).item() == 0.5


def test_empty_mask_is_nan_not_a_hit():
    empty = torch.zeros(1, *SIZE, dtype=torch.bool)
    scores = localization_scores(_peak_map(3, 3), empty, 2.0)
    assert all(torch.isnan(v).all() for v in scores.values())


# ------------------------------------------------------------------------------------------ hand-computed
def test_all_mass_inside_or_outside_the_box():
    torch.manual_seed(1)
    mask = _mask()
    values = torch.rand(1, *SIZE) + 0.1
    inside, outside = values * mask, values * ~mask
    for name, score in localization_scores(inside, mask, 3.0).items():
        assert score.item() == pytest.approx(1.0), name
    for name, score in localization_scores(outside, mask, 0.0).items():
        if name != "pointing_game":  # at tolerance 3 the outside maximum may lie near the box
            assert score.item() == 0.0, name


def test_constant_and_zero_maps_score_the_box_area_share():
    mask = _mask()
    for fill in (0.0, 0.7):
        scores = localization_scores(torch.full((1, *SIZE), fill), mask, 1.0)
        for name in ("pointing_game_tol0", "energy_pointing_game", "relevance_mass", "relevance_rank"):
            assert scores[name].item() == pytest.approx(25 / 400), (fill, name)
        # Tolerance 1 adds the 4 x 5 edge neighbours (not the diagonal corners): 45 of 400.
        assert scores["pointing_game"].item() == pytest.approx(45 / 400)


def test_relevance_rank_fills_ties_in_expectation():
    maps = torch.tensor([[[3.0, 2.0, 2.0, 1.0]]])
    masks = torch.tensor([[[False, True, False, True]]])
    # K = 2: the top pixel (3) is outside; one of the two tied 2s fills the second place, half a hit expected.
    assert relevance_rank(maps, masks).item() == pytest.approx(0.25)
    # Without ties: top-2 = {3 (out), 2.5 (in)}.
    assert relevance_rank(torch.tensor([[[3.0, 2.5, 2.0, 1.0]]]), masks).item() == pytest.approx(0.5)


def test_energy_pointing_game_is_relevance_mass_and_the_score_cam_formula():
    torch.manual_seed(2)
    maps = torch.rand(4, *SIZE) ** 3
    boxes = torch.tensor(
        [[5.0, 5.0, 10.0, 10.0], [0.0, 0.0, 20.0, 3.0], [12.0, 1.0, 19.0, 18.0], [3, 3, 4, 4]]
    )
    masks = box_masks(boxes, SIZE)
    energy = energy_pointing_game(maps, masks)
    assert torch.equal(energy, relevance_mass(maps, masks))
    for n, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        in_box = maps[n, y0:y1, x0:x1].sum()
        expected = in_box / (in_box + (maps[n].sum() - in_box))
        assert energy[n].item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"differ in shape"):
        pointing_game(torch.rand(2, 8, 8), torch.zeros(2, 8, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"masks must be bool"):
        relevance_mass(torch.rand(2, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match=r"maps must be float \(N, H, W\)"):
        relevance_rank(torch.rand(8, 8), torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"maps are on cpu but masks on meta"):
        pointing_game(torch.rand(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool, device="meta"))
    with pytest.raises(ValueError, match=r"tolerance must be"):
        pointing_game(torch.rand(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool), -1.0)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_masks(torch.zeros(3, 5), (8, 8))


# ------------------------------------------------------------------------------------------------ baselines
def test_baselines():
    centre = centre_baseline(2, (8, 10))
    assert torch.equal(centre[0], centre[1])
    # Even sides: the four pixels around the centre tie for the maximum.
    peak = centre[0] == centre[0].max()
    assert peak.nonzero().tolist() == [[3, 4], [3, 5], [4, 4], [4, 5]]
    # Score-wise, half of the tied centre pixels inside the box is half a hit.
    assert pointing_game(centre[:1], box_masks(torch.tensor([[0.0, 0.0, 5.0, 8.0]]), (8, 10))).item() == 0.5
    a = uniform_baseline(3, (5, 6), generator=torch.Generator().manual_seed(0))
    b = uniform_baseline(3, (5, 6), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (3, 5, 6) and a.min() >= 0 and a.max() < 1
    assert set(BASELINES) == {"uniform", "centre"}
    assert torch.equal(BASELINES["centre"](1, (8, 10), generator=None, device="cpu"), centre[:1])


# ------------------------------------------------------------------------------------------------ geometry
def _boxes(boxes: list[list[float]], sizes: list[tuple[int, int]]) -> ImageBoxes:
    b = torch.tensor(boxes, dtype=torch.float32)
    return ImageBoxes(b, torch.tensor(sizes), ~b.isnan().any(1))


def test_map_boxes_by_hand():
    # (height, width) = (80, 100): x scales by 64 / 100, y by 64 / 80.
    boxes = _boxes(
        [[10, 20, 50, 60], [0, 0, 10, 10], [0, 0, 5, 5], [0, 0, 7, 7], [math.nan] * 4], [(80, 100)] * 5
    )
    out, kept = map_boxes(boxes, make_preset("resnet", resize=64))
    assert out[0].tolist() == pytest.approx([6.4, 16.0, 32.0, 48.0])
    assert kept.tolist() == [True, True, True, True, False]
    # inception at resize 64 crops 56 (7/8), offset round(8 / 2) = 4; the second box is cut, the third removed.
    out, kept = map_boxes(boxes, make_preset("inception", resize=64))
    assert out[0].tolist() == pytest.approx([2.4, 12.0, 28.0, 44.0])
    assert out[1].tolist() == pytest.approx([0.0, 0.0, 2.4, 4.0])  # [-4, -4, 2.4, 4] clipped
    assert box_masks(out[1:2], (56, 56))[0].sum().item() == 2 * 4
    # [0, 0, 3.2, 4] - 4 lies wholly before the crop; [0, 0, 4.48, 5.6] - 4 keeps 0.48 px, short of a pixel centre.
    assert kept.tolist() == [True, True, False, False, False]
    assert out[2:].isnan().all()


@pytest.mark.parametrize(
    ("name", "resize", "crop"), [("resnet", 64, None), ("inception", 64, None), ("inception", 65, 56)]
)
def test_map_boxes_agrees_with_torchvisions_resize_and_crop(name, resize, crop):
    # Oracle: the box's indicator image through the preset's own eval_view (torchvision resize + center_crop).
    preset = make_preset(name, resize=resize, crop=crop)
    height, width = 77, 103
    boxes = _boxes([[10, 5, 60, 40], [0, 30, 20, 77], [80, 0, 103, 20]], [(height, width)] * 3)
    out, kept = map_boxes(boxes, preset)
    side = preset.output_size
    masks = box_masks(out, (side, side))
    for n, (x0, y0, x1, y1) in enumerate(boxes.boxes.long().tolist()):
        image = torch.zeros(3, height, width, dtype=torch.uint8)
        image[:, y0:y1, x0:x1] = 255
        seen = preset.eval_view(image)[0] > 127
        assert kept[n] == bool(seen.any())
        # Only resampled edge pixels may differ: those within 1.5 px of both the box's inside and its outside.
        edge = dilate(masks[n : n + 1], 1.5)[0] & dilate(~masks[n : n + 1], 1.5)[0]
        assert not ((seen ^ masks[n]) & ~edge).any(), (name, n)
        assert (seen & masks[n]).sum() >= 0.8 * masks[n].sum()
    # The offset is torchvision's: (65 - 56) / 2 = 4.5 rounds half to even, to 4.
    if crop == 56:
        grid = torch.arange(resize).expand(resize, resize)
        assert TF.center_crop(grid, [crop, crop])[0, 0].item() == 4
        assert out[0, 0].item() == pytest.approx(10 * 65 / 103 - 4, rel=1e-6)


# -------------------------------------------------------------------------------------------------- quantus
def _quantus(metric: str, maps: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    quantus = pytest.importorskip("quantus")
    a = maps[:, None].numpy()
    s = masks[:, None].numpy().astype(np.float32)
    x = np.zeros_like(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = getattr(quantus, metric)(disable_warnings=True)(
            model=None, x_batch=x, y_batch=np.zeros(len(a), dtype=int), a_batch=a, s_batch=s
        )
    return np.asarray(scores, dtype=np.float64)


def test_quantus_agrees_where_it_is_right():
    # Continuous random maps: one maximum, no ties in the rank.
    torch.manual_seed(3)
    maps = torch.rand(6, 16, 16)
    boxes = torch.tensor(
        [[2, 2, 8, 8], [0, 0, 16, 4], [5, 9, 15, 16], [0, 0, 16, 16], [7, 7, 9, 9], [3, 1, 4, 15]]
    )
    masks = box_masks(boxes.float(), (16, 16))
    assert np.array_equal(_quantus("PointingGame", maps, masks), pointing_game(maps, masks).numpy())
    ours = relevance_mass(maps, masks).numpy()
    assert np.allclose(_quantus("RelevanceMassAccuracy", maps, masks), ours, rtol=1e-5)
    assert np.allclose(_quantus("RelevanceRankAccuracy", maps, masks), relevance_rank(maps, masks).numpy())
    # The case split must not be one-sided: some hits and some misses.
    assert 0 < pointing_game(maps, masks).sum().item() < 6


def test_quantus_pointing_game_counts_an_empty_mask_as_a_hit():
    maps = torch.rand(1, 16, 16)
    empty = torch.zeros(1, 16, 16, dtype=torch.bool)
    # quantus 0.6.0 writes NaN into a bool array: NaN is truthy, so the empty mask scores a hit.
    assert _quantus("PointingGame", maps, empty).tolist() == [1.0]
    assert pointing_game(maps, empty).isnan().all()
    # And it resolves a tie in the map's favour: any tied maximum inside is a full hit (ours: the share inside).
    plateau = torch.full((1, 16, 16), 0.5)
    plateau[0, 2:6, 2:6] = 1.0  # 16 tied maxima, 4 of them (rows and columns 2-3) in the box
    masks = box_masks(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), (16, 16))
    assert _quantus("PointingGame", plateau, masks).tolist() == [1.0]
    assert pointing_game(plateau, masks).item() == 0.25


# ------------------------------------------------------------------------------ the localization experiment
def _drawn_boxes(synthetic: dict, object_scale: list[float]) -> ImageBoxes:
    """The boxes generate_synthetic would write for every object image of the set, drawn without saving files.

    Each picture is a function of np.random.default_rng([seed, class, image]) alone (the generator's contract;
    checked below against generate_synthetic), so drawing it in memory gives the file's box and size.
    """
    boxes, sizes = [], []
    for c in range(synthetic["num_classes"] - 1):  # the last class is clutter: no box
        for i in range(synthetic["images_per_class"]):
            rng = np.random.default_rng([synthetic["seed"], c, i])
            image, box = render_image(
                OBJECT_SPECS[c], rng, synthetic["min_size"], synthetic["max_size"], tuple(object_scale)
            )
            boxes.append(box)
            sizes.append((image.height, image.width))
    return ImageBoxes(
        torch.tensor(boxes, dtype=torch.float32), torch.tensor(sizes), torch.ones(len(boxes), dtype=bool)
    )


def _centre_hits(boxes: ImageBoxes, preset) -> float:
    mapped, kept = map_boxes(boxes, preset)
    assert kept.all()
    side = preset.output_size
    masks = box_masks(mapped, (side, side))
    return pointing_game(centre_baseline(len(boxes), (side, side)), masks).mean().item()


def test_localization_experiment_centre_baseline_is_at_most_30_percent(tmp_path):
    cfg = compose_train(["experiment=localization", f"paths.root_dir={tmp_path}"])
    data = cfg.data
    synthetic = dict(data.synthetic)
    preset = make_preset(data.preset, resize=data.resize, crop=data.crop)
    # The experiment's promises: small objects, and layer4 (stride 32) at least 4x4.
    assert preset.output_size >= 128
    assert list(synthetic["object_scale"]) == pytest.approx([0.15, 0.35])
    assert str(data.root).endswith("synthetic_small")
    # The in-memory drawing is the generator's: same boxes for the first images of each class.
    small = {**synthetic, "images_per_class": 2}
    info = generate_synthetic(tmp_path / "check", **small)
    drawn = _drawn_boxes(small, synthetic["object_scale"])
    assert sorted(tuple(int(v) for v in b) for b in drawn.boxes.tolist()) == sorted(info.boxes.values())
    # Every object image of the set (the test split is a per-class sample of them) at the experiment's geometry.
    assert _centre_hits(_drawn_boxes(synthetic, synthetic["object_scale"]), preset) <= 0.30
    # Contrast: the same set at the default object scale, where the centre is a strong guess (~70 %).
    assert _centre_hits(_drawn_boxes(synthetic, [0.4, 0.8]), preset) > 0.30


def test_localization_scores_can_compute_some_columns_only():
    torch.manual_seed(0)
    maps = torch.rand(6, 20, 20)
    masks = loc.box_masks(torch.tensor([[2.0, 3.0, 11.0, 15.0]] * 6), (20, 20))
    every = loc.localization_scores(maps, masks, 2.0)
    some = loc.localization_scores(maps, masks, 2.0, columns=("energy_pointing_game", "pointing_game"))
    assert list(some) == ["pointing_game", "energy_pointing_game"]
    for name, values in some.items():
        assert torch.equal(values, every[name])
    with pytest.raises(ValueError, match=r"unknown localization column\(s\) \['pointing'\]"):
        loc.localization_scores(maps, masks, 2.0, columns=("pointing",))
