"""Weights that correspond by role, not by name: copy conv units across layouts, fold BatchNorm into the conv where
the target has none, and count what was copied, folded or left fresh (as fractions of the parameters)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

KINDS = ("copied", "folded", "fresh")


@dataclass
class TransferReport:
    """Per parameter of the target model (name -> number of elements), where its initial value came from.

    copied: taken from the checkpoint as it is (a stem's filters may be summed over input channels or absorb the
    input normalization, see `fold_input_affine`); folded: a conv weight/bias computed from a checkpoint conv and its
    BatchNorm (`fold_batch_norm`); fresh: initialised here, no checkpoint tensor has its role and shape.
    """

    copied: dict[str, int] = field(default_factory=dict)
    folded: dict[str, int] = field(default_factory=dict)
    fresh: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, model: nn.Module, copied: Iterable[str], folded: Iterable[str] = ()) -> TransferReport:
        """The report for `model` given the names of its copied and folded parameters; all others are fresh."""
        copied, folded = set(copied), set(folded)
        report = cls()
        for name, p in model.named_parameters():
            kind = "copied" if name in copied else "folded" if name in folded else "fresh"
            getattr(report, kind)[name] = p.numel()
        return report

    @property
    def total(self) -> int:
        return sum(sum(getattr(self, kind).values()) for kind in KINDS)

    def fraction(self, kind: str) -> float:
        """The share of all parameter elements that are `kind` (copied | folded | fresh)."""
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
        return sum(getattr(self, kind).values()) / self.total

    def summary(self) -> str:
        """'copied 1.2 %, folded 3.4 %, fresh 95.4 % of 1,234,567 parameters'."""
        shares = ", ".join(f"{kind} {100 * self.fraction(kind):.1f} %" for kind in KINDS)
        return f"{shares} of {self.total:,} parameters"


def fold_batch_norm(
    weight: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, var: Tensor, eps: float
) -> tuple[Tensor, Tensor]:
    """An unbiased conv followed by BatchNorm in eval mode as one conv with bias (Ioffe & Szegedy 2015, inference):
    w' = w·γ/√(v+ε), b' = β − μ·γ/√(v+ε), per output channel."""
    scale = gamma / torch.sqrt(var + eps)
    return weight * scale.view(-1, 1, 1, 1), beta - mean * scale


def fold_input_affine(weight: Tensor, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """An unpadded conv fed x·a + t (a, t per input channel) as a conv fed x: conv(W, x·a + t) = conv(W·a, x) + k,
    k_o = Σ_{c,i,j} W_{o,c,i,j} t_c. Returns (W·a, k). Exact only without padding (padding would see 0, not t)."""
    return weight * scale.view(1, -1, 1, 1), (weight * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
