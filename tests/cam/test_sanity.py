"""Cascading randomization (cam/sanity.py): Spearman against scipy and by hand, the cascade on a real backbone."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from scipy import stats
from torch import nn

from caltech_cam.cam.metrics.sanity import (
    SANITY_THRESHOLD,
    average_ranks,
    cascading_randomization,
    cascading_randomization_many,
    randomization_blocks,
    sanity_summary,
    spearman,
    step_above,
)

BLOCKS = ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]


def test_spearman_matches_scipy_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    # Few distinct values: many ties; a 3-D item shape is flattened per item.
    a = torch.randint(0, 5, (6, 4, 10), generator=g).float()
    b = torch.randint(0, 5, (6, 4, 10), generator=g).float()
    ours = spearman(a, b)
    oracle = [
        stats.spearmanr(x.flatten(), y.flatten()).statistic for x, y in zip(a.numpy(), b.numpy(), strict=True)
    ]
    assert ours.tolist() == pytest.approx(oracle, abs=1e-12)
    ranks = average_ranks(a.flatten(1))
    assert ranks.numpy() == pytest.approx(stats.rankdata(a.flatten(1).numpy(), axis=1))


def test_spearman_by_hand() -> None:
    # ranks a = [1, 2.5, 2.5, 4], b = [1, 3, 2, 4]; centred: [-1.5, 0, 0, 1.5], [-1.5, .5, -.5, 1.5]
    # rho = 4.5 / sqrt(4.5 * 5)
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], [7.0, 7.0, 7.0, 7.0]])
    b = torch.tensor([[1.0, 3.0, 2.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    rho = spearman(a, b)
    assert rho[0].item() == pytest.approx(4.5 / math.sqrt(22.5), abs=1e-12)
    assert rho[1].item() == pytest.approx(-1.0, abs=1e-12)
    assert math.isnan(rho[2].item())  # a constant map has no ranking


@pytest.fixture(scope="module")
def backbone(one_thread) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=4).eval(), torch.randn(3, 3, 128, 128)


def test_blocks_top_down_and_step_above(backbone) -> None:
    model, images = backbone
    assert randomization_blocks(model, images) == BLOCKS
    assert step_above(BLOCKS, "layer3") == BLOCKS.index("layer4")
    assert step_above(BLOCKS, "layer3.1.conv2") == BLOCKS.index("layer4")
    assert step_above(BLOCKS, "fc") == 0  # nothing above the top block: its own step
    with pytest.raises(ValueError, match="in none of the randomized blocks"):
        step_above(BLOCKS, "avgpool")


def test_cascade_leaves_the_original_untouched_and_flags_a_map_blind_to_the_weights(backbone) -> None:
    model, images = backbone
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.layer2.train()  # a mixed-mode model keeps its flags
    layers = ["layer3", "layer4"]
    steps = cascading_randomization_many(model, images, layers, ["gradcam", "eigencam"])
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.layer2.training and not model.layer3.training
    model.layer2.eval()
    assert [block for block, _ in steps] == BLOCKS
    # Eigen-CAM reads the layer's activations only: until the layer's own block is reset its map is the same,
    # so rho is exactly 1 (an identity), and it is flagged.
    for block, per_method in steps[: BLOCKS.index("layer3")]:
        assert per_method["eigencam"]["layer3"].tolist() == pytest.approx([1.0] * 3, abs=1e-9), block
    eigen = sanity_summary([(b, d["eigencam"]) for b, d in steps])
    assert eigen["layer3"]["step"] == "layer4" and eigen["layer3"]["flagged"]
    assert eigen["layer4"]["mean_above"] == pytest.approx(1.0) and eigen["layer4"]["flagged"]
    # Grad-CAM's weights are the gradient through the randomized head: at the last block (4x4 at 128 px) its maps
    # change (measured mean rho -0.19 here; -0.11 and 0.11 for two other model seeds).
    grad = sanity_summary([(b, d["gradcam"]) for b, d in steps])
    assert grad["layer4"]["step"] == "fc"
    assert grad["layer4"]["mean_above"] < SANITY_THRESHOLD and not grad["layer4"]["flagged"], grad["layer4"]


def test_single_method_form_and_seed(backbone) -> None:
    model, images = backbone
    one = cascading_randomization(model, images, ["layer3"], "grad-cam", blocks=["fc", "layer4"], seed=3)
    again = cascading_randomization(model, images, ["layer3"], "gradcam", blocks=["fc", "layer4"], seed=3)
    assert [b for b, _ in one] == ["fc", "layer4"]
    for (_, x), (_, y) in zip(one, again, strict=True):
        assert torch.equal(x["layer3"], y["layer3"])  # the seed fixes the random weights
    with pytest.raises(ValueError, match="unknown block 'head'; the model's children: conv1, bn1"):
        cascading_randomization(model, images, ["layer3"], "gradcam", blocks=["head"])


def test_a_block_that_cannot_be_reset_is_refused(backbone) -> None:
    _, images = backbone

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Scale(), nn.Flatten(1), nn.LazyLinear(2))
    model(images)
    with pytest.raises(ValueError, match=r"module '1' \(Scale\) has parameters but no reset_parameters"):
        cascading_randomization(model, images, ["0"], "gradcam")
