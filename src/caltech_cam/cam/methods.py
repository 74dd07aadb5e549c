"""CAM methods: each turns a layer's activations A (B, K, h, w) and gradients G = ∂y_c/∂A into a raw map (B, h, w).

Raw means before the ReLU, upsampling and scaling that `engine.postprocess` applies to every method alike.
Adding a method is a function here, registered by name (with the spellings other libraries use as aliases),
and a test. `get_method` is the one place a user's spelling is checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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
    aliases: tuple[str, ...] = ()
    default: bool = True  # run when no method is named (`cams.methods: null`); expensive ones say False

    def __call__(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        return self.fn(activations, gradients)


METHODS: dict[str, Method] = {}
# Every accepted spelling, folded by `_key`, -> its canonical name (`grad-cam++` -> `gradcampp`).
ALIASES: dict[str, str] = {}


def _key(spelling: str) -> str:
    """Case, spaces, '-' and '_' do not matter; '++' and 'PlusPlus' both mean 'pp'."""
    folded = re.sub(r"[\s_-]", "", spelling.lower())
    return folded.replace("++", "pp").replace("plusplus", "pp")


def register(
    name: str, *, uses_gradients: bool = True, aliases: Sequence[str] = (), default: bool = True
) -> Callable[[RawMap], RawMap]:
    """Add a raw-map function to `METHODS` under `name`; `aliases` are other spellings `get_method` accepts.
    `default=False` keeps an expensive method out of `default_methods()`: it runs only where it is named."""

    def add(fn: RawMap) -> RawMap:
        keys = {_key(spelling): spelling for spelling in (name, *aliases)}
        for key, spelling in keys.items():
            if ALIASES.get(key, name) != name:
                raise ValueError(
                    f"CAM method {name!r}: the spelling {spelling!r} already means {ALIASES[key]!r}"
                )
        METHODS[name] = Method(name, fn, uses_gradients, tuple(aliases), default)
        ALIASES.update(dict.fromkeys(keys, name))
        return fn

    return add


def default_methods() -> list[str]:
    """The methods that run when none is named (`cams.methods: null`): every registered default, in order."""
    return [m.name for m in METHODS.values() if m.default]


def get_methods(names: Sequence[str] | str | None) -> list[Method]:
    """The methods `names` spells (one name, a list, or None: `default_methods()`), canonical and checked; the one
    place a user's list of methods is read. An empty list is an error naming the choices."""
    if names is None:
        names = default_methods()
    elif isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError(f"no CAM method named; choose from {', '.join(METHODS)} (null: the defaults)")
    return [get_method(name) for name in names]


def get_method(name: str) -> Method:
    """The registered method called `name` or one of its aliases (case, spaces, '-' and '_' ignored)."""
    canonical = ALIASES.get(_key(name)) if isinstance(name, str) else None
    if canonical is None:
        spellings = ", ".join(
            m.name + (f" (also {', '.join(m.aliases)})" if m.aliases else "") for m in METHODS.values()
        )
        raise ValueError(
            f"unknown CAM method {name!r}; choose one of {spellings} (case, spaces, '-' and '_' are ignored)"
        )
    return METHODS[canonical]


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """M = Σ_k w_k A_k for per-image channel weights w (B, K)."""
    return torch.einsum("bk,bkhw->bhw", weights, activations)


def gradcam_weights(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM's channel weights α_k = (1/hw) Σ_ij ∂y_c/∂A_k^ij, shape (B, K)."""
    return gradients.mean(dim=(2, 3))


@register("gradcam", aliases=("grad-cam",))
def gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017): M = Σ_k α_k A_k, α_k = (1/hw) Σ_ij ∂y_c/∂A_k^ij."""
    return weighted_sum(gradcam_weights(activations, gradients), activations)


@register("gradcampp", aliases=("gradcam++", "gradcam_pp", "GradCAMPlusPlus"))
def gradcampp(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al., WACV 2018, eq. 19 with exp(y_c)): M = Σ_k w_k A_k,
    w_k = Σ_ij a_k^ij ReLU(g_k^ij), a_k^ij = g² / (2g² + (Σ_ab A_k^ab) g³) with g = ∂y_c/∂A_k^ij.

    For g > 0, a·g = g / (2 + S_k g) with S_k = Σ_ab A_k^ab. On post-ReLU features S_k ≥ 0, so the denominator is
    ≥ 2: exact, no epsilon (pytorch-grad-cam adds 1e-6 to the denominator, which matters when gradients are tiny).
    Guard: on a layer whose activations can be negative (a conv or BatchNorm output named by the user) S_k g can
    reach −2, where the closed form divides by zero, and beyond it turns negative. Such terms (denominator < 1, i.e.
    S_k g < −1) are dropped (weight 0), as torch-cam and pytorch-grad-cam zero the α they cannot form, so the map
    stays finite; nothing changes where S_k ≥ 0.
    """
    positive = gradients.clamp_min(0)
    sums = activations.sum(dim=(2, 3), keepdim=True)
    denominator = 2 + sums * positive
    usable = denominator >= 1
    terms = torch.where(usable, positive / torch.where(usable, denominator, torch.ones_like(denominator)), 0)
    return weighted_sum(terms.sum(dim=(2, 3)), activations)


@register("hirescam", aliases=("hires-cam",))
def hirescam(activations: Tensor, gradients: Tensor) -> Tensor:
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891): M = Σ_k G_k ⊙ A_k (element-wise, no averaging).

    For a global-average-pool + linear head at the last block, Σ_ij M_ij = y_c − b_c exactly.
    """
    return (gradients * activations).sum(dim=1)


@register("xgradcam", aliases=("xgrad-cam",))
def xgradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020): M = Σ_k α_k A_k, α_k = Σ_ij (A_k^ij / Σ_ab A_k^ab) ∂y_c/∂A_k^ij."""
    sums = activations.sum(dim=(2, 3))
    # A channel that is zero everywhere has Σ A = 0 and contributes nothing: give it weight 0, not 0/0.
    weights = (gradients * activations).sum(dim=(2, 3)) / torch.where(sums != 0, sums, torch.ones_like(sums))
    return weighted_sum(weights, activations)


@register("layercam", aliases=("layer-cam",))
def layercam(activations: Tensor, gradients: Tensor) -> Tensor:
    """LayerCAM (Jiang et al., IEEE TIP 2021): M = Σ_k ReLU(∂y_c/∂A_k) ⊙ A_k."""
    return (gradients.clamp_min(0) * activations).sum(dim=1)


@register("eigencam", uses_gradients=False, aliases=("eigen-cam",))
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
