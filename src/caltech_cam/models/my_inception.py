"""`my_inception_v3`: the study's Table 2, a shallow Inception-v3 (stem, blocks 3a/3b, max pool, 4a/4b, GAP, FC).

Trained from scratch only: no published weights exist for this layout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import register_model

HEAD = ("fc",)
DROPOUT = 0.4


class ConvBNReLU(nn.Sequential):
    """conv (no bias: BN follows) + BN + ReLU, Table 2's "conv"; BN eps 1e-3 as in torchvision's Inception."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0
    ):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels, eps=0.001),
            nn.ReLU(inplace=True),
        )


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated: 1×1 64 | 1×1 48 → 5×5 64 | 1×1 64 → 3×3 96 → 3×3 96 | pool → 1×1 P.

    Out channels 64 + 64 + 96 + P. Table 2's "48 → 64" branch is read as 5×5, as in torchvision's Mixed_5b/5c,
    the blocks whose numbers (256 and 288 out) Table 2 reproduces; its pool is a 3×3 average pool, stride 1.
    """

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBNReLU(in_channels, 64, 1)
        self.branch5x5 = nn.Sequential(ConvBNReLU(in_channels, 48, 1), ConvBNReLU(48, 64, 5, padding=2))
        self.branch3x3dbl = nn.Sequential(
            ConvBNReLU(in_channels, 64, 1), ConvBNReLU(64, 96, 3, padding=1), ConvBNReLU(96, 96, 3, padding=1)
        )
        self.branch_pool = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1), ConvBNReLU(in_channels, pool_features, 1)
        )
        self.out_channels = 64 + 64 + 96 + pool_features

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1x1, self.branch5x5, self.branch3x3dbl, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


class MyInceptionV3(nn.Module):
    """Table 2: stem → 3a (256) → 3b (288) → 3×3/2 max pool → 4a (288) → 4b (288) → GAP → dropout 0.4 → FC."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvBNReLU(in_channels, 32, 3, stride=2),
            ConvBNReLU(32, 32, 3),
            ConvBNReLU(32, 64, 3, padding=1),
            nn.MaxPool2d(3, stride=2),
        )
        self.inception3a = InceptionBlock(64, pool_features=32)
        self.inception3b = InceptionBlock(self.inception3a.out_channels, pool_features=64)
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.inception4a = InceptionBlock(self.inception3b.out_channels, pool_features=64)
        self.inception4b = InceptionBlock(self.inception4a.out_channels, pool_features=64)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(DROPOUT)
        self.fc = nn.Linear(self.inception4b.out_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.inception3b(self.inception3a(self.stem(x)))
        x = self.inception4b(self.inception4a(self.maxpool(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


@register_model(
    "my_inception_v3",
    preset="inception",
    in_channels=(1, 3),
    cam_layers=("inception3a", "inception3b", "inception4a", "inception4b"),
    head=HEAD,
)
def build_my_inception_v3(
    num_classes: int, *, in_channels: int = 3, pretrained: bool = False, **_: object
) -> MyInceptionV3:
    """Table 2's network for `in_channels` (1 gray or 3 RGB), from scratch."""
    if pretrained:
        raise ValueError(
            "my_inception_v3 has no pretrained weights (Table 2's layout was never trained on ImageNet); "
            "use model.pretrained=false, or model=inception_v3 for ImageNet weights"
        )
    return MyInceptionV3(num_classes, in_channels=in_channels)
