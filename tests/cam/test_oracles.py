"""Our maps against independent implementations: pytorch-grad-cam (every method it shares) and captum.

Both come with the `dev` extra. Without it these tests are skipped with the reason, except under
CALTECH_CAM_CI=1 (set by CI), where a missing oracle fails the run (see `require` in conftest.py).
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from caltech_cam.cam import capture, compute_cams, postprocess
from caltech_cam.cam.methods import eigencam
from tests.helpers import require

pgc = require("pytorch_grad_cam")
captum_attr = require("captum.attr")
ClassifierOutputTarget = require("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget

ORACLES = {
    "gradcam": pgc.GradCAM,
    "gradcampp": pgc.GradCAMPlusPlus,
    "hirescam": pgc.HiResCAM,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
}
RESNET_LAYERS = ["layer1", "layer2", "layer3", "layer4"]
# Mixed_7c is 1×1 at 80 px: a constant map, which both sides must scale to all zeros.
INCEPTION_LAYERS = ["Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"]


# Other jobs may share these 2 cores: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


class Scaled(nn.Module):
    """logits × factor. pytorch-grad-cam's Grad-CAM++ adds 1e-6 to the denominator 2g² + S·g³ of its a_k^ij,
    which swamps g² ~ 1e-6 of a random model; with logits × 1e4 (g² × 1e8) that epsilon is negligible and both
    compute the same formula (Grad-CAM++ is not scale invariant, but the score is the same for both)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval(), torch.randn(2, 3, 80, 96), torch.tensor([3, 917])


@pytest.fixture(scope="module")
def inception() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True).eval()
    return model, torch.randn(2, 3, 80, 80), torch.tensor([10, 500])


def oracle_maps(cls, model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # One call per layer: given several layers, pytorch-grad-cam averages them into one map. Its maps are
    # ReLU -> min-max -> cv2 bilinear resize (half-pixel centres, = align_corners=False) -> min-max, with 1e-7
    # added to the max: the same as ours up to ~1e-7.
    with cls(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
        return torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(int(c)) for c in targets]))


@pytest.mark.parametrize("net", ["resnet", "inception"])
@pytest.mark.parametrize("method", list(ORACLES))
def test_gradient_methods_match_pytorch_grad_cam(net, method, request):
    model, x, targets = request.getfixturevalue(net)
    layers = RESNET_LAYERS if net == "resnet" else INCEPTION_LAYERS
    if method == "gradcampp":
        model = Scaled(model, 1e4)
        layers = [f"model.{name}" for name in layers]
    ours = compute_cams(model, x, layers, method=method, targets=targets)
    for layer in layers:
        theirs = oracle_maps(ORACLES[method], model, layer, x, targets)
        assert ours[layer].shape == theirs.shape == (2, *x.shape[-2:])
        torch.testing.assert_close(ours[layer], theirs, rtol=0, atol=1e-4, msg=f"{method} {layer}")
        if layer.endswith("Mixed_7c"):
            assert (ours[layer] == 0).all()
        else:
            assert ours[layer].amax() == 1 and ours[layer].std() > 0.05  # a real map, not a degenerate one


@pytest.mark.parametrize("net", ["resnet", "inception"])
def test_eigencam_matches_pytorch_grad_cam_up_to_sign(net, request):
    model, x, _ = request.getfixturevalue(net)
    layers = RESNET_LAYERS if net == "resnet" else INCEPTION_LAYERS
    seen = capture(model, x, layers, gradients=False)
    ours = compute_cams(model, x, layers, method="eigencam")
    for layer in layers:
        theirs = oracle_maps(pgc.EigenCAM, model, layer, x, torch.zeros(2, dtype=torch.long))
        raw = eigencam(seen.activations[layer])
        torch.testing.assert_close(ours[layer], postprocess(raw, tuple(x.shape[-2:])), rtol=0, atol=0)
        # pytorch-grad-cam keeps whatever sign numpy's SVD returns; we fix it (see `eigencam`). Compare per image
        # with the better of the two signs.
        flipped = postprocess(-raw, tuple(x.shape[-2:]))
        for b in range(2):
            error = min((ours[layer][b] - theirs[b]).abs().max(), (flipped[b] - theirs[b]).abs().max())
            assert error < 1e-4, f"eigencam {layer} image {b}: {error}"


def test_eigencam_sign_points_to_stronger_activation(resnet):
    model, x, _ = resnet
    acts = capture(model, x, ["layer3"], gradients=False).activations["layer3"]
    raw = eigencam(acts)
    centred_total = acts.sum(dim=1) - acts.sum(dim=1).mean(dim=(1, 2), keepdim=True)
    assert ((raw * centred_total).sum(dim=(1, 2)) > 0).all()
    torch.testing.assert_close(eigencam(acts * 3), raw * 3, rtol=1e-4, atol=1e-4)  # the scale passes through


@pytest.mark.parametrize("layer", ["layer2", "layer4"])
def test_gradcam_raw_map_matches_captum(resnet, layer):
    model, x, targets = resnet
    ours = compute_cams(model, x, [layer], targets=targets, normalize=False)[layer]
    attribution = captum_attr.LayerGradCam(model, dict(model.named_modules())[layer]).attribute(
        x, target=targets, relu_attributions=True
    )
    theirs = captum_attr.LayerAttribution.interpolate(attribution, tuple(x.shape[-2:]), "bilinear")[:, 0]
    assert theirs.abs().amax() > 0.1
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_a_missing_oracle_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CALTECH_CAM_CI", raising=False)
    with pytest.raises(
        pytest.skip.Exception, match=r"no_such_oracle is not installed .*pip install -e \.\[dev\]"
    ):
        require("no_such_oracle")
    monkeypatch.setenv("CALTECH_CAM_CI", "1")
    with pytest.raises(pytest.fail.Exception, match=r"CALTECH_CAM_CI=1 and no_such_oracle is not installed"):
        require("no_such_oracle")
    assert require("captum.attr") is captum_attr
