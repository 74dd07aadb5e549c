"""ROAD (noisy linear imputation, MoRF/LeRF) by hand and against pytorch-grad-cam, Quantus 0.6.0 and torch-cam."""

from __future__ import annotations

import contextlib
from functools import partial

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from caltech_cam.cam.metrics.faithfulness import deletion_auc, insertion_auc
from caltech_cam.cam.metrics.road import (
    ROAD_FRACTIONS,
    _downsample,
    _neighbour_sum,
    _upsample,
    noisy_linear_impute,
    removal_counts,
    road_curve,
    road_scores,
)
from tests.helpers import require

pytestmark = pytest.mark.usefixtures("one_thread")

# Rong et al.'s neighbour weights, written out independently of the module: 1/6 edge, 1/12 diagonal.
WEIGHTS = {(-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12, (0, -1): 1 / 6, (0, 1): 1 / 6, (1, -1): 1 / 12}
WEIGHTS |= {(1, 0): 1 / 6, (1, 1): 1 / 12}


def smooth_images(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, channels, size, size, generator=g)
    return nn.functional.avg_pool2d(noise, 3, 1, 1, count_include_pad=False) * 2


def blob_saliency(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """A Gaussian bump at a random place plus a little noise: distinct values, removed regions are big holes."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = torch.rand(2, batch, 1, 1, generator=g) * size
    bump = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 4) ** 2))
    return bump + 0.05 * torch.rand(batch, size, size, generator=g)


def tiny_net(classes: int = 3, channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, classes),
    ).eval()


# ----- imputation by hand ---------------------------------------------------------------------------------------


def test_one_removed_pixel_is_the_weighted_mean_of_its_neighbours():
    image = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    removed = torch.zeros(1, 5, 5, dtype=torch.bool)
    removed[0, 2, 2] = removed[0, 0, 0] = removed[0, 4, 3] = True
    out = noisy_linear_impute(image, removed, noise=0.0, tol=1e-10)
    x = image[0]
    centre = sum(w * x[:, 2 + dy, 2 + dx] for (dy, dx), w in WEIGHTS.items())
    # A corner has 3 neighbours inside the image, weights 1/6 + 1/6 + 1/12: the mean is renormalized by 5/12.
    corner = (x[:, 0, 1] / 6 + x[:, 1, 0] / 6 + x[:, 1, 1] / 12) / (5 / 12)
    # An edge pixel: 5 neighbours, weights 1/6 + 1/6 + 1/6 + 1/12 + 1/12 = 2/3.
    edge = (x[:, 4, 2] / 6 + x[:, 4, 4] / 6 + x[:, 3, 3] / 6 + x[:, 3, 2] / 12 + x[:, 3, 4] / 12) / (2 / 3)
    torch.testing.assert_close(out[0, :, 2, 2], centre, rtol=0, atol=1e-9)
    torch.testing.assert_close(out[0, :, 0, 0], corner, rtol=0, atol=1e-9)
    torch.testing.assert_close(out[0, :, 4, 3], edge, rtol=0, atol=1e-9)
    assert torch.equal(out[~removed[:, None].expand_as(out)], image[~removed[:, None].expand_as(image)])


def test_two_adjacent_removed_pixels_solve_the_coupled_system():
    # Pixels a = (2, 2) and b = (2, 3) of a 6×6 image are each other's neighbour (weight 1/6):
    # a = Ka + b/6, b = Kb + a/6, Kx = Σ of w·x over the known neighbours  ->  a = (Ka + Kb/6) / (1 − 1/36).
    image = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    removed = torch.zeros(1, 6, 6, dtype=torch.bool)
    removed[0, 2, 2:4] = True
    x = image[0, 0]

    def known_sum(y: int, x0: int) -> torch.Tensor:
        return sum(
            w * x[y + dy, x0 + dx] for (dy, dx), w in WEIGHTS.items() if not removed[0, y + dy, x0 + dx]
        )

    ka, kb = known_sum(2, 2), known_sum(2, 3)
    out = noisy_linear_impute(image, removed, noise=0.0, tol=1e-12)
    assert out[0, 0, 2, 2].item() == pytest.approx(((ka + kb / 6) / (1 - 1 / 36)).item(), abs=1e-9)
    assert out[0, 0, 2, 3].item() == pytest.approx(((kb + ka / 6) / (1 - 1 / 36)).item(), abs=1e-9)


def test_a_constant_image_stays_constant_and_kept_pixels_never_change():
    g = torch.Generator().manual_seed(1)
    removed = torch.rand(3, 32, 32, generator=g) < torch.tensor([0.1, 0.5, 0.9])[:, None, None]
    constant = torch.full((3, 3, 32, 32), 0.7)
    filled = noisy_linear_impute(constant, removed, noise=0.0, tol=1e-6)
    torch.testing.assert_close(filled, constant, rtol=0, atol=1e-5)
    image = smooth_images(3, 3, 32)
    out = noisy_linear_impute(image, removed, noise=0.01, generator=g)
    keep = ~removed[:, None].expand_as(image)
    assert torch.equal(out[keep], image[keep])
    assert (out[~keep] != image[~keep]).all()


@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_the_residual_is_below_the_tolerance(tol: float):
    images = smooth_images(2, 3, 40)
    removed = blob_saliency(2, 40) > torch.tensor([0.2, 0.6])[:, None, None]
    out = noisy_linear_impute(images, removed, noise=0.0, tol=tol).double()
    # The system, in float64: for removed i, Σ_j w_ij (x_i − x_j) = 0 with d_i = Σ_j w_ij over the image.
    m = removed[:, None].double()
    degree = _neighbour_sum(torch.ones(1, 1, 40, 40, dtype=torch.float64))
    residual = m * (degree * out - _neighbour_sum(out))
    b = m * _neighbour_sum((1 - m) * images.double())
    relative = residual.flatten(2).norm(dim=2) / b.flatten(2).norm(dim=2)
    # CG's recursive residual in float32 drifts a little from the true one.
    assert relative.max().item() <= 1.5 * tol


def test_noise_is_added_to_the_removed_pixels_only_with_the_given_scale():
    images = smooth_images(2, 3, 48)
    removed = blob_saliency(2, 48) > 0.3
    clean = noisy_linear_impute(images, removed, noise=0.0, tol=1e-6)
    noisy = noisy_linear_impute(
        images, removed, noise=0.05, tol=1e-6, generator=torch.Generator().manual_seed(0)
    )
    again = noisy_linear_impute(
        images, removed, noise=0.05, tol=1e-6, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(noisy, again)
    delta = (noisy - clean)[removed[:, None].expand_as(images)]
    assert delta.numel() > 2000
    assert delta.std().item() == pytest.approx(0.05, rel=0.05)
    assert delta.mean().abs().item() < 0.005


def test_multigrid_transfer_operators_are_adjoint():
    # The V-cycle is a symmetric preconditioner (required by CG) only if restriction = prolongation transposed.
    for h, w in [(8, 8), (7, 9), (5, 4)]:
        c = torch.randn(2, 3, (h + 1) // 2, (w + 1) // 2, dtype=torch.float64)
        r = torch.randn(2, 3, h, w, dtype=torch.float64)
        up = _upsample(c, torch.empty(2, 3, 2 * c.shape[2], 2 * c.shape[3], dtype=torch.float64))[..., :h, :w]
        reference = nn.functional.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(up, reference[..., :h, :w])
        assert (up * r).sum().item() == pytest.approx((c * _downsample(r)).sum().item(), rel=1e-12)


def test_bad_input_is_named():
    images = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="every pixel removed"):
        noisy_linear_impute(images, torch.ones(1, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="removed must be bool"):
        noisy_linear_impute(images, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="fractions"):
        removal_counts([0.5, 1.0], 64)
    with pytest.raises(ValueError, match="order"):
        road_curve(tiny_net(), images, torch.rand(1, 8, 8), order="most")
    with pytest.raises(ValueError, match="saliency"):
        road_curve(tiny_net(), images, torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="out of range"):
        road_curve(tiny_net(), images, torch.rand(1, 8, 8), [3])
    with pytest.raises(RuntimeError, match="max_iter=1"):
        noisy_linear_impute(smooth_images(1, 1, 64), blob_saliency(1, 64) > 0.2, tol=1e-7, max_iter=1)


# ----- which pixels go ------------------------------------------------------------------------------------------


def test_removal_counts_round_half_to_even():
    assert removal_counts(ROAD_FRACTIONS, 100) == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    # 49 pixels: 4.9, 9.8, 14.7, 19.6, 24.5 (-> 24, half to even), 29.4, 34.3, 39.2, 44.1.
    assert removal_counts(ROAD_FRACTIONS, 49) == [5, 10, 15, 20, 24, 29, 34, 39, 44]


class Recorder(nn.Module):
    """A 3-class linear model that keeps every input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.stack([x.mean(dim=(1, 2, 3)), torch.zeros(len(x)), torch.zeros(len(x))], dim=1)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_removes_the_top_or_bottom_round_p_hw_pixels(order: str):
    g = torch.Generator().manual_seed(3)
    images = torch.randn(2, 3, 7, 7, generator=g)  # i.i.d. pixels: every imputed pixel changes
    saliency = torch.rand(2, 7, 7, generator=g)
    model = Recorder()
    road_curve(model, images, saliency, [0, 1], order=order, noise=0.0, chunk_size=5)
    seen = torch.cat(model.seen).view(2, 9, 3, 7, 7)
    changed = (seen != images[:, None]).any(dim=2).flatten(2)  # (B, F, HW)
    ranked = saliency.flatten(1).argsort(dim=1, descending=order == "morf")
    for f, k in enumerate(removal_counts(ROAD_FRACTIONS, 49)):
        for b in range(2):
            expected = torch.zeros(49, dtype=torch.bool)
            expected[ranked[b, :k]] = True
            assert torch.equal(changed[b, f], expected), (order, f, b)


class BrightDetector(nn.Module):
    """p(class 0) = sigmoid(20 · (mean of channel 0 − 0.25)): a known, increasing function of the pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = 20 * (x[:, 0].mean(dim=(1, 2)) - 0.25)
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)


def test_morf_destroys_the_evidence_lerf_keeps_it():
    # Channel 0 is 1 on a centred disc of radius 6, 0 elsewhere; the saliency is the disc.
    size = 24
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - 11.5) ** 2 + (xx - 11.5) ** 2) < 36).float()
    images = torch.stack([disc, torch.zeros_like(disc), torch.zeros_like(disc)])[None]
    saliency = disc[None] + 0.01 * torch.rand(1, size, size, generator=torch.Generator().manual_seed(0))
    model = BrightDetector()
    scores = road_scores(model, images, saliency, [0], noise=0.0)
    morf = road_curve(model, images, saliency, [0], order="morf", noise=0.0)[0]
    lerf = road_curve(model, images, saliency, [0], order="lerf", noise=0.0)[0]
    # MoRF at 0.2 has removed the whole disc (112 of 576 pixels): the imputation from its dark rim fills 0.
    assert disc.sum().item() == 112
    assert morf[1:].max().item() == pytest.approx(1 / (1 + np.exp(5)), abs=1e-6)
    # LeRF removes dark pixels (464 of them: up to p = 0.8), imputed from dark or bright neighbours: the evidence
    # never falls below the original image's.
    p0 = torch.sigmoid(20 * (disc.mean() - 0.25)).item()
    assert lerf[:8].min().item() >= p0 - 1e-5
    assert scores["road_morf"].item() == pytest.approx(morf.mean().item(), abs=1e-6)
    assert scores["road"].item() == pytest.approx((lerf.mean() - morf.mean()).item() / 2, abs=1e-6)
    assert scores["road"].item() > 0.1


# ----- oracles --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tol", "atol"), [(1e-4, 2e-3), (1e-6, 1e-4)])
def test_imputation_matches_pytorch_grad_cam_sparse_solve(tol: float, atol: float):
    NoisyLinearImputer = require("pytorch_grad_cam.metrics.road").NoisyLinearImputer

    images = smooth_images(3, 3, 32)
    saliency = blob_saliency(3, 32)
    # Image 0 loses its top 10 %, image 1 its top 90 % (big holes), image 2 a scattered 70 %.
    top = saliency.flatten(1).quantile(torch.tensor([0.9, 0.1, 0.5]), dim=1).diagonal()
    removed = saliency >= top[:, None, None]
    removed[2] = torch.rand(32, 32, generator=torch.Generator().manual_seed(5)) < 0.7  # scattered pixels too
    ours = noisy_linear_impute(images, removed, noise=0.0, tol=tol)
    imputer = NoisyLinearImputer(noise=0.0)
    # pytorch-grad-cam's mask is 1 = keep, 0 = impute; one scipy spsolve per image.
    theirs = torch.stack([imputer(images[i], (~removed[i]).float()) for i in range(3)])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=atol)


def _grad_cam_counts(cams: np.ndarray, percentile: int, least: bool) -> np.ndarray:
    """How many pixels pytorch-grad-cam's RemoveMostRelevantFirst / RemoveLeastRelevantFirst remove (its rule)."""
    maps = 1 - cams if least else cams
    return np.array([(m >= np.percentile(m, percentile)).sum() for m in maps])


@pytest.mark.parametrize("least", [False, True])
def test_road_curve_matches_pytorch_grad_cam_road(least: bool):
    perturbation = require("pytorch_grad_cam.metrics.perturbation_confidence")
    NoisyLinearImputer = require("pytorch_grad_cam.metrics.road").NoisyLinearImputer
    ClassifierOutputSoftmaxTarget = require(
        "pytorch_grad_cam.utils.model_targets"
    ).ClassifierOutputSoftmaxTarget
    PerturbationConfidenceMetric = perturbation.PerturbationConfidenceMetric
    RemoveLeastRelevantFirst = perturbation.RemoveLeastRelevantFirst
    RemoveMostRelevantFirst = perturbation.RemoveMostRelevantFirst

    size, batch = 16, 2
    images = smooth_images(batch, 3, size)
    g = torch.Generator().manual_seed(7)
    # Distinct map values (a permutation), so both sides remove exactly the top (bottom) k pixels.
    cams = np.stack(
        [torch.randperm(size * size, generator=g).view(size, size).numpy() / (size * size - 1)] * 1
    )
    cams = np.concatenate([cams, cams[:, ::-1]]).astype(np.float32)
    model, targets = tiny_net(), [2, 0]
    remove = RemoveLeastRelevantFirst if least else RemoveMostRelevantFirst
    # Its percentile q removes ≈ (100 − q) %: the default ROADMostRelevantFirst(percentile=80) removes 52 of 256.
    assert _grad_cam_counts(cams, 80, least=False).tolist() == [52, 52]
    percentiles = [10, 30, 50, 80, 90]
    counts = [_grad_cam_counts(cams, q, least)[0] for q in percentiles]
    assert all(
        (_grad_cam_counts(cams, q, least) == c).all() for q, c in zip(percentiles, counts, strict=True)
    )
    theirs, their_images = [], []
    for q in percentiles:
        metric = PerturbationConfidenceMetric(remove(q, NoisyLinearImputer(noise=0.0)))
        p, perturbed = metric(
            images, cams, [ClassifierOutputSoftmaxTarget(t) for t in targets], model,
            return_visualization=True, return_diff=False,
        )  # fmt: skip
        theirs.append(torch.as_tensor(p))
        their_images.append(perturbed)
    fractions = [c / (size * size) for c in counts]
    order = "lerf" if least else "morf"
    ours = road_curve(model, images, torch.as_tensor(cams), targets, order=order, fractions=fractions, noise=0.0,
                      tol=1e-6)  # fmt: skip
    torch.testing.assert_close(ours, torch.stack(theirs, dim=1), rtol=0, atol=1e-5)
    # The imputed images themselves, through a model that hands its input back.
    model_seen = Recorder()
    road_curve(model_seen, images, torch.as_tensor(cams), targets, order=order, fractions=fractions, noise=0.0,
               tol=1e-6)  # fmt: skip
    seen = torch.cat(model_seen.seen).view(batch, len(fractions), 3, size, size)
    torch.testing.assert_close(seen, torch.stack(their_images, dim=1), rtol=0, atol=1e-4)


def _quantus_road(
    model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray, percentages, batch_size: int
):
    quantus = require("quantus")
    metric = quantus.ROAD(
        percentages=percentages, noise=0.0, disable_warnings=True, display_progressbar=False
    )
    return metric(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu", batch_size=batch_size)


def test_road_matches_quantus_on_one_channel_images_and_quantus_averages_only_its_first_batch():
    # Quantus' ROAD ranks the map broadcast over the channels, so it needs 1-channel inputs; it removes
    # ⌊HW · p / 100⌋ pixels (20×20 = 400 pixels: 40, 120, ... agree with our round) and reports the accuracy
    # [argmax = y] per percentage, not the probability: with 2 classes that is [p_y > 1/2].
    size, batch = 20, 4
    images = smooth_images(batch, 1, size, seed=2)
    saliency = blob_saliency(batch, size, seed=2)
    model = tiny_net(classes=2, channels=1, seed=4)
    percentages = [10, 30, 50, 70, 90]
    fractions = [p / 100 for p in percentages]
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    ours = road_curve(model, images, saliency, predicted, fractions=fractions, noise=0.0, tol=1e-6)
    assert ((ours - 0.5).abs() > 1e-3).all(), "an imputed image at the decision boundary: pick another seed"
    x, a = images.numpy(), saliency[:, None].numpy()
    theirs = _quantus_road(model, x, predicted.numpy(), a, percentages, batch_size=batch)
    assert list(theirs) == percentages
    expected = (ours > 0.5).float().mean(dim=0)
    assert [theirs[p] for p in percentages] == pytest.approx(expected.tolist())
    # Same images, labels of the last two flipped, batches of 2: the true mean accuracy halves at every
    # percentage where the first two are right, but Quantus reports its first batch's only.
    y = predicted.clone()
    y[2:] = 1 - y[2:]
    first_batch_only = _quantus_road(model, x, y.numpy(), a, percentages, batch_size=2)
    correct = (ours > 0.5) == (y == predicted)[:, None]
    assert [first_batch_only[p] for p in percentages] == pytest.approx(
        correct[:2].float().mean(dim=0).tolist()
    )
    assert correct[:2].float().mean(dim=0).tolist() != correct.float().mean(dim=0).tolist()


class FixedMaps:
    """torch-cam's CAM-extractor protocol, handing back given maps: its metric then ranks pixels by them."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **_: object) -> list[torch.Tensor]:
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    def _hooks_off(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def test_deletion_insertion_match_torchcam():
    # Matching settings: 16×16 = 256 positions, 16 steps (torch-cam's ⌈256/16⌉-pixel steps = our ⌊s·256/16⌋),
    # deletion to a zero baseline (both), insertion from RISE's blur (torch-cam's baseline callable), softmax.
    # Where they differ: torch-cam's default is 20 steps of ⌈HW/20⌉ pixels integrated over the actual fractions,
    # and insertion from zeros; ours integrates over t = s/steps with ⌊s·HW/steps⌋ pixels from the blur.
    DeletionInsertionMetric = require("torchcam.metrics").DeletionInsertionMetric

    size, batch = 16, 3
    images = smooth_images(batch, 3, size, seed=6)
    saliency = blob_saliency(batch, size, seed=6)
    model, targets = tiny_net(seed=1), [0, 1, 2]
    blur = partial(TF.gaussian_blur, kernel_size=[11, 11], sigma=[5.0, 5.0])
    softmax = partial(torch.softmax, dim=-1)
    insertion, deletion = [], []
    for i in range(batch):  # one image per update: torch-cam's summary is a mean, ours per image
        maps = FixedMaps(model, saliency[i : i + 1])
        # One metric object has one baseline: the blur for insertion, zeros (its default) for deletion.
        blurred = DeletionInsertionMetric(maps, softmax, steps=16, baseline=blur)
        blurred.update(images[i : i + 1], class_idx=[targets[i]])
        insertion.append(blurred.summary()["insertion_auc"])
        zero = DeletionInsertionMetric(maps, softmax, steps=16)
        zero.update(images[i : i + 1], class_idx=[targets[i]])
        deletion.append(zero.summary()["deletion_auc"])
    ours_insertion = insertion_auc(model, images, saliency, targets, steps=16)
    ours_deletion = deletion_auc(model, images, saliency, targets, steps=16)
    assert ours_insertion.tolist() == pytest.approx(insertion, abs=1e-6)
    assert ours_deletion.tolist() == pytest.approx(deletion, abs=1e-6)
    assert len(set(deletion)) == batch and min(insertion) > max(deletion) - 1  # distinct, real curves


def test_quantus_road_fails_on_three_channel_images():
    # Quantus broadcasts the (B, 1, H, W) map over the channels and ranks C·H·W entries, then indexes the H·W
    # pixels with them: any index ≥ H·W is an IndexError. Ours takes (B, H, W) maps for any C.
    images = smooth_images(2, 3, 16)
    saliency = blob_saliency(2, 16)
    model = tiny_net()
    with pytest.raises(IndexError):
        _quantus_road(model, images.numpy(), np.array([0, 1]), saliency[:, None].numpy(), [50], batch_size=2)
    assert road_curve(model, images, saliency, [0, 1], fractions=[0.5]).shape == (2, 1)


def test_confidence_change_per_image_by_hand_and_its_mean_is_the_reduced_value():
    from caltech_cam.cam.metrics.faithfulness import confidence_change

    images = smooth_images(4, 3, 16, seed=8)
    model = tiny_net(seed=2)
    maps = {
        "a": blob_saliency(4, 16, seed=8),
        "b": torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(9)),
    }
    targets = [0, 1, 2, 1]
    per_image = confidence_change(model, images, maps, targets, reduce=False, chunk_size=3)
    reduced = confidence_change(model, images, maps, targets, chunk_size=3)
    with torch.no_grad():
        y = model(images).softmax(dim=1)[torch.arange(4), targets]
        for name, m in maps.items():
            o = model(images * m[:, None]).softmax(dim=1)[torch.arange(4), targets]
            drop = 100 * (y - o).clamp_min(0) / y
            torch.testing.assert_close(per_image[name]["average_drop"], drop)
            torch.testing.assert_close(per_image[name]["increase_in_confidence"], 100 * (o > y).float())
            for key in ("average_drop", "increase_in_confidence"):
                assert per_image[name][key].shape == (4,)
                torch.testing.assert_close(per_image[name][key].mean(), reduced[name][key])
    assert (
        0 < per_image["a"]["increase_in_confidence"].sum() < 400 or per_image["a"]["average_drop"].std() > 0
    )
