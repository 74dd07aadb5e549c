"""CAM methods: each turns a layer's activations A (B, K, h, w) and gradients G = ∂y_c/∂A into a raw map (B, h, w).

Raw means before the ReLU, upsampling and scaling that `engine.postprocess` applies to every method alike.
Adding a method is a function here, registered by name, and a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

RawMap = Callable[[Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class Method:
    """A registered CAM method: `fn(activations, gradients) -> raw map`; gradients are None if not used."""

    name: str
    fn: RawMap
    uses_gradients: bool = True

    def __call__(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        return self.fn(activations, gradients)


METHODS: dict[str, Method] = {}


def register(name: str, *, uses_gradients: bool = True) -> Callable[[RawMap], RawMap]:
    """Add a raw-map function to `METHODS` under `name`."""

    def add(fn: RawMap) -> RawMap:
        METHODS[name] = Method(name, fn, uses_gradients)
        return fn

    return add


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """M = Σ_k w_k A_k for per-image channel weights w (B, K)."""
    return torch.einsum("bk,bkhw->bhw", weights, activations)


def gradcam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM's channel weights α_k = (1/hw) Σ_ij ∂y_c/∂A_k^ij, shape (B, K)."""
    return gradients.mean(dim=(2, 3))


@register("gradcam")
def gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017): M = Σ_k α_k A_k, α_k = (1/hw) Σ_ij ∂y_c/∂A_k^ij."""
    return weighted_sum(gradcam_weights(activations, gradients), activations)


@register("gradcampp")
def gradcampp(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, eq. 19 with exp(y_c)): M = Σ_k w_k A_k,
    w_k = Σ_ij a_k^ij ReLU(g_k^ij), a_k^ij = g² / (2g² + (Σ_ab A_k^ab) g³) with g = ∂y_c/∂A_k^ij.

    For g > 0, a·g = g / (2 + S_k g) with S_k = Σ_ab A_k^ab ≥ 0 (post-ReLU features), so the denominator is ≥ 2:
    exact, no epsilon (pytorch-grad-cam adds 1e-6 to the denominator, which matters when gradients are tiny).
    """
    positive = gradients.clamp_min(0)
    sums = activations.sum(dim=(2, 3), keepdim=True)
    return weighted_sum((positive / (2 + sums * positive)).sum(dim=(2, 3)), activations)


@register("hirescam")
def hirescam(activations: Tensor, gradients: Tensor) -> Tensor:
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891): M = Σ_k G_k ⊙ A_k (element-wise, no averaging).

    For a global-average-pool + linear head at the last block, Σ_ij M_ij = y_c − b_c exactly.
    """
    return (gradients * activations).sum(dim=1)


@register("xgradcam")
def xgradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020): M = Σ_k α_k A_k, α_k = Σ_ij (A_k^ij / Σ_ab A_k^ab) ∂y_c/∂A_k^ij."""
    sums = activations.sum(dim=(2, 3))
    # A channel that is zero everywhere has Σ A = 0 and contributes nothing: give it weight 0, not 0/0.
    weights = (gradients * activations).sum(dim=(2, 3)) / torch.where(sums != 0, sums, torch.ones_like(sums))
    return weighted_sum(weights, activations)


@register("layercam")
def layercam(activations: Tensor, gradients: Tensor) -> Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021): M = Σ_k ReLU(∂y_c/∂A_k) ⊙ A_k."""
    return (gradients.clamp_min(0) * activations).sum(dim=1)


@register("eigencam", uses_gradients=False)
def eigencam(activations: Tensor, gradients: Tensor | None = None) -> Tensor:
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020): M_ij = (A_ij − Ā)·v₁, the projection of each position's
    channel vector, centred per channel over positions, on the first principal direction v₁ (top right
    singular vector of the centred (hw × K) matrix X). Class-agnostic: no gradient, no target.

    SVD leaves v₁'s sign free; it is fixed so that M correlates positively with the channel sum Σ_k X_k
    (equivalently Σ_k v₁k ≥ 0): the map is high where the layer fires most. Computed from the smaller Gram
    matrix (XXᵀ or XᵀX) in float64, which gives v₁ (and s₁u₁ = Xv₁) without a full SVD.
    """
    b, k, h, w = activations.shape
    x = activations.flatten(2).transpose(1, 2).double()  # (B, hw, K)
    x = x - x.mean(dim=1, keepdim=True)
    if h * w <= k:
        values, vectors = torch.linalg.eigh(x @ x.transpose(1, 2))  # ascending; top = last
        projection = vectors[..., -1] * values[:, -1:].clamp_min(0).sqrt()  # X v₁ = s₁ u₁
    else:
        _, vectors = torch.linalg.eigh(x.transpose(1, 2) @ x)
        projection = (x @ vectors[..., -1:])[..., 0]
    sign = torch.where((projection * x.sum(dim=2)).sum(dim=1, keepdim=True) < 0, -1.0, 1.0)
    return (sign * projection).view(b, h, w).to(activations.dtype)
