"""`my_inception_v3`: the study's Table 2, a shallow Inception (stem, blocks 3a/3b, max pool, 4a/4b, GAP, FC).

The default is the study as written: its §3.1 block (`block="study"`) and "ReLU after each convolution" with no
BatchNorm (`batch_norm=False`). Ours, as explicit options: `block="inception_a"` (torchvision's InceptionA, the
layout of earlier releases) and `batch_norm=True` (BN after each conv). With `pretrained`, every tensor that
corresponds by role and shape comes from torchvision's ImageNet Inception-v3 (`load_inception_v3_units`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.models import Inception3

from .inception import pretrained_input_affine
from .registry import register_model
from .transfer import TransferReport, fold_batch_norm, fold_input_affine
from .weights import INCEPTION_V3_WEIGHTS, fetch_state_dict, sum_input_channels

log = logging.getLogger(__name__)

HEAD = ("fc",)
DROPOUT = 0.4
# torchvision's Inception-v3 BatchNorm eps: what its weights were trained (and are folded) with.
BN_EPS = 0.001
# Table 2's tuples, read as (b1, b2a, b2b, b3a, b3b, pool_proj); 3b, 4a and 4b share one.
WIDTHS_3A = (64, 48, 64, 64, 96, 32)
WIDTHS = (64, 48, 64, 64, 96, 64)
BLOCK_NAMES = ("inception3a", "inception3b", "inception4a", "inception4b")


class ConvUnit(nn.Sequential):
    """conv + ReLU (the study), or conv without bias + BN (eps 1e-3) + ReLU with `batch_norm` (ours)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        batch_norm: bool,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=not batch_norm
            )
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels, eps=BN_EPS))
        super().__init__(*layers, nn.ReLU(inplace=True))

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d | None:
        return self[1] if isinstance(self[1], nn.BatchNorm2d) else None


class Block(nn.Module):
    """Parallel branches on the same input, concatenated along the channels."""

    branches: tuple[str, ...]
    out_channels: int

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([getattr(self, name)(x) for name in self.branches], dim=1)


class StudyBlock(Block):
    """The study's §3.1 block: 1×1 b1 | 1×1 b2a → 3×3 b2b | 1×1 b3a → 5×5 b3b | 3×3 max pool → 1×1 pool_proj.

    Out channels b1 + b2b + b3b + pool_proj (256 for 3a). The pool has stride 1 and padding 1, and the 3×3/5×5
    convs padding 1/2: the branches must keep the map's size to be concatenated (the study states no padding).
    """

    branches = ("branch1", "branch2", "branch3", "branch4")

    def __init__(self, in_channels: int, widths: Sequence[int], *, batch_norm: bool) -> None:
        super().__init__()
        b1, b2a, b2b, b3a, b3b, pool_proj = widths
        bn = {"batch_norm": batch_norm}
        self.branch1 = ConvUnit(in_channels, b1, 1, **bn)
        self.branch2 = nn.Sequential(
            ConvUnit(in_channels, b2a, 1, **bn), ConvUnit(b2a, b2b, 3, padding=1, **bn)
        )
        self.branch3 = nn.Sequential(
            ConvUnit(in_channels, b3a, 1, **bn), ConvUnit(b3a, b3b, 5, padding=2, **bn)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), ConvUnit(in_channels, pool_proj, 1, **bn)
        )
        self.out_channels = b1 + b2b + b3b + pool_proj


class InceptionABlock(Block):
    """Ours (`block=inception_a`): torchvision's InceptionA (Mixed_5b/5c/5d) with Table 2's widths,
    1×1 b1 | 1×1 b2a → 5×5 b2b | 1×1 b3a → 3×3 b3b → 3×3 b3b | 3×3 average pool → 1×1 pool_proj.

    Out channels b1 + b2b + b3b + pool_proj, as the study's block. Module names are those of earlier releases.
    """

    branches = ("branch1x1", "branch5x5", "branch3x3dbl", "branch_pool")

    def __init__(self, in_channels: int, widths: Sequence[int], *, batch_norm: bool) -> None:
        super().__init__()
        b1, b2a, b2b, b3a, b3b, pool_proj = widths
        bn = {"batch_norm": batch_norm}
        self.branch1x1 = ConvUnit(in_channels, b1, 1, **bn)
        self.branch5x5 = nn.Sequential(
            ConvUnit(in_channels, b2a, 1, **bn), ConvUnit(b2a, b2b, 5, padding=2, **bn)
        )
        self.branch3x3dbl = nn.Sequential(
            ConvUnit(in_channels, b3a, 1, **bn),
            ConvUnit(b3a, b3b, 3, padding=1, **bn),
            ConvUnit(b3b, b3b, 3, padding=1, **bn),
        )
        self.branch_pool = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1), ConvUnit(in_channels, pool_proj, 1, **bn)
        )
        self.out_channels = b1 + b2b + b3b + pool_proj


BLOCKS: dict[str, type[Block]] = {"study": StudyBlock, "inception_a": InceptionABlock}


class MyInceptionV3(nn.Module):
    """Table 2: stem (3×3/2 conv 32, 3×3 conv 32, 3×3 conv 64 pad 1, 3×3/2 max pool) → 3a (256) → 3b (288) →
    3×3/2 max pool → 4a (288) → 4b (288) → global average pool → dropout 0.4 → FC. Unstated paddings are 0."""

    def __init__(
        self, num_classes: int, in_channels: int = 3, *, block: str = "study", batch_norm: bool = False
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block={block!r}: expected one of {list(BLOCKS)}")
        bn = {"batch_norm": batch_norm}
        self.stem = nn.Sequential(
            ConvUnit(in_channels, 32, 3, stride=2, **bn),
            ConvUnit(32, 32, 3, **bn),
            ConvUnit(32, 64, 3, padding=1, **bn),
            nn.MaxPool2d(3, stride=2),
        )
        make = BLOCKS[block]
        self.inception3a = make(64, WIDTHS_3A, **bn)
        self.inception3b = make(self.inception3a.out_channels, WIDTHS, **bn)
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.inception4a = make(self.inception3b.out_channels, WIDTHS, **bn)
        self.inception4b = make(self.inception4a.out_channels, WIDTHS, **bn)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(DROPOUT)
        self.fc = nn.Linear(self.inception4b.out_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inception3b(self.inception3a(self.stem(x)))
        x = self.inception4b(self.inception4a(self.maxpool(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# ------------------------------------------------------------------------------- torchvision tensors by role
# Our conv unit -> torchvision Inception-v3's BasicConv2d (conv + BN) in the same role. Table 2's stem is
# torchvision's first three convs; 3a/3b/4a take Mixed_5b/5c/5d (the blocks whose widths Table 2 copies). 4b has no
# counterpart (torchvision's next block, Mixed_6a, is a grid reduction). A unit whose shape differs (3a's 1×1 convs
# see 64 channels, not 192) starts fresh.
STEM_SOURCES = {"stem.0": "Conv2d_1a_3x3", "stem.1": "Conv2d_2a_3x3", "stem.2": "Conv2d_2b_3x3"}
BLOCK_SOURCES = {"inception3a": "Mixed_5b", "inception3b": "Mixed_5c", "inception4a": "Mixed_5d"}
# Within a block: the study's spatial convs (3×3 48→64, 5×5 64→96) differ in kernel from torchvision's (5×5, 3×3):
# only its 1×1 convs correspond (reduce 48, reduce 64, branch 1, pool projection).
BRANCH_SOURCES = {
    "study": {
        "branch1": "branch1x1",
        "branch2.0": "branch5x5_1",
        "branch3.0": "branch3x3dbl_1",
        "branch4.1": "branch_pool",
    },
    "inception_a": {
        "branch1x1": "branch1x1",
        "branch5x5.0": "branch5x5_1",
        "branch5x5.1": "branch5x5_2",
        "branch3x3dbl.0": "branch3x3dbl_1",
        "branch3x3dbl.1": "branch3x3dbl_2",
        "branch3x3dbl.2": "branch3x3dbl_3",
        "branch_pool.1": "branch_pool",
    },
}
UNIT_TENSORS = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")


def unit_sources(block: str) -> dict[str, str]:
    """Our conv unit -> torchvision's, for blocks of type `block`."""
    pairs = dict(STEM_SOURCES)
    for ours, theirs in BLOCK_SOURCES.items():
        pairs.update({f"{ours}.{b}": f"{theirs}.{t}" for b, t in BRANCH_SOURCES[block].items()})
    return pairs


def torchvision_shapes() -> dict[str, torch.Size]:
    """The tensor shapes of torchvision's Inception-v3 state dict (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        reference = Inception3(aux_logits=True, init_weights=False)
    return {k: v.shape for k, v in reference.state_dict().items()}


def check_torchvision_layout(state: Mapping[str, Tensor], origin: str) -> None:
    """Every tensor the mapping reads (any block type) is in `state` with torchvision's shape; else a ValueError
    naming what is missing or misshapen."""
    shapes = torchvision_shapes()
    wanted = [
        f"{src}.{t}"
        for src in {**unit_sources("inception_a"), **unit_sources("study")}.values()
        for t in UNIT_TENSORS
    ]
    missing = sorted({k for k in wanted if k not in state})
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(shapes[k])}"
        for k in set(wanted)
        if k in state and state[k].shape != shapes[k]
    )
    if missing or wrong:
        raise ValueError(
            f"{origin} does not fit torchvision's Inception-v3, the layout my_inception_v3 takes pretrained "
            f"tensors from: missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"wrong shapes {wrong[:5]}{'...' if len(wrong) > 5 else ''} ({len(wrong)})"
        )


def load_inception_v3_units(
    model: MyInceptionV3,
    state: Mapping[str, Tensor],
    block: str,
    *,
    input_scale: Sequence[float],
    input_shift: Sequence[float],
    origin: str = "the pretrained state dict",
) -> TransferReport:
    """Copy every conv unit of torchvision's Inception-v3 (`state`) that corresponds to one of `model` by role and
    shape; with BN off, fold its BN into the conv (`fold_batch_norm`). The first conv's RGB filters are summed for a
    gray input, and it absorbs the input map x·scale + shift to the weights' (p − 0.5)/0.5 (`fold_input_affine`)."""
    check_torchvision_layout(state, origin)
    copied: list[str] = []
    folded: list[str] = []
    for ours, theirs in unit_sources(block).items():
        unit: ConvUnit = model.get_submodule(ours)
        weight = state[f"{theirs}.conv.weight"]
        gamma, beta, mean, var = (
            state[f"{theirs}.bn.{t}"] for t in ("weight", "bias", "running_mean", "running_var")
        )
        if ours == "stem.0":
            assert unit.conv.padding == (0, 0), "the input affine folds exactly only into an unpadded conv"
            weight = sum_input_channels(weight, unit.conv.in_channels)
            weight, shift = fold_input_affine(weight, torch.tensor(input_scale), torch.tensor(input_shift))
            mean = mean - shift  # BN(conv(W·a, x) + k) with μ is BN(conv(W·a, x)) with μ − k
        if weight.shape != unit.conv.weight.shape:
            continue
        with torch.no_grad():
            if unit.bn is None:
                w, b = fold_batch_norm(weight, gamma, beta, mean, var, BN_EPS)
                unit.conv.weight.copy_(w)
                unit.conv.bias.copy_(b)
                folded += [f"{ours}.0.weight", f"{ours}.0.bias"]
            else:
                unit.conv.weight.copy_(weight)
                for name, value in (
                    ("weight", gamma),
                    ("bias", beta),
                    ("running_mean", mean),
                    ("running_var", var),
                ):
                    getattr(unit.bn, name).copy_(value)
                copied += [f"{ours}.0.weight", f"{ours}.1.weight", f"{ours}.1.bias"]
    return TransferReport.of(model, copied, folded)


@register_model(
    "my_inception_v3",
    preset="inception",
    in_channels=(1, 3),
    cam_layers=BLOCK_NAMES,
    head=HEAD,
    weights=INCEPTION_V3_WEIGHTS,
    options={"block": tuple(BLOCKS), "batch_norm": (False, True)},
)
def build_my_inception_v3(
    num_classes: int,
    *,
    in_channels: int = 3,
    pretrained: bool = False,
    weights_path: str | None = None,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
    block: str = "study",
    batch_norm: bool = False,
    **_: object,
) -> MyInceptionV3:
    """Table 2's network for `in_channels` (1 gray or 3 RGB); with `pretrained`, the tensors of torchvision's
    ImageNet Inception-v3 that correspond by role and shape (logged: copied, folded, fresh)."""
    model = MyInceptionV3(num_classes, in_channels=in_channels, block=block, batch_norm=batch_norm)
    if pretrained:
        scale, shift = pretrained_input_affine("my_inception_v3", in_channels, input_mean, input_std)
        state = fetch_state_dict(INCEPTION_V3_WEIGHTS, weights_path)
        origin = weights_path or str(INCEPTION_V3_WEIGHTS)
        report = load_inception_v3_units(
            model, state, block, input_scale=scale, input_shift=shift, origin=origin
        )
        log.info(
            "my_inception_v3 (block=%s, batch_norm=%s) from %s: %s",
            block,
            str(batch_norm).lower(),
            origin,
            report.summary(),
        )
    return model
