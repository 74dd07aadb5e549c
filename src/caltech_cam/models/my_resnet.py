"""`my_resnet50`: the study's Table 1 (ResNet-50 ending in "FC | 512"), written from its own Bottleneck block.

Backbone module names follow torchvision's resnet50 (conv1, bn1, layer1..4 with conv1/bn1/conv2/bn2/conv3/bn3/
downsample.0/.1), so its ImageNet state dict loads as is. The head is new: `head` (Table 1's FC 2048 -> 512, plus a
ReLU, ours) and `classifier` (512 -> num_classes, ours: Table 1 ends at FC 512); torchvision's `fc` (2048 -> 1000)
has no counterpart and is not loaded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .registry import register_model
from .resnet import STAGES as CAM_LAYERS
from .weights import RESNET50_WEIGHTS, fetch_state_dict, load_backbone

HEAD = ("head", "classifier")
# (width, blocks, stride) per stage. Table 1's layer1 row states no stride but the shape H/8, the same as its
# layer2 row (stride 2): the table contradicts itself. layer1 has stride 1 here, as in He et al. and torchvision
# (the stem's max pool already brings the map to H/4, so layer1 is at H/4 and layer2..4 at H/8, H/16, H/32).
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
HEAD_WIDTH = 512


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carries the stride, as torchvision's "v1.5"), 1×1 expand ×4; BN after each conv.

    out = ReLU(F(x) + shortcut(x)), shortcut = 1×1 conv + BN when the shape changes, else identity.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class MyResNet50(nn.Module):
    """Table 1: 7×7/2 conv 64, 3×3/2 max pool, stages 3/4/6/3 of Bottlenecks, global average pool, FC 512; then ours:
    ReLU and the classifier."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for index, (width, blocks, stride) in enumerate(STAGES, start=1):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(channels, width, stride if b == 0 else 1))
                channels = width * Bottleneck.expansion
            self.add_module(f"layer{index}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # Table 1's "FC | 512", then (ours) a ReLU, without which it and the classifier would collapse into one map.
        self.head = nn.Sequential(nn.Linear(channels, HEAD_WIDTH), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(HEAD_WIDTH, num_classes)
        # torchvision's initialization, so scratch training matches resnet50's.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled 2048-d features (what torchvision's resnet50 feeds to its `fc`)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.head(self.forward_features(x)))


@register_model(
    "my_resnet50",
    preset="resnet",
    in_channels=(3,),
    cam_layers=CAM_LAYERS,
    head=HEAD,
    weights=RESNET50_WEIGHTS,
)
def build_my_resnet50(
    num_classes: int, *, pretrained: bool = False, weights_path: str | None = None, **_: object
) -> MyResNet50:
    """Table 1's ResNet-50; with `pretrained`, resnet50's ImageNet backbone weights (its `fc` is dropped), logged."""
    model = MyResNet50(num_classes)
    if pretrained:
        state = fetch_state_dict(RESNET50_WEIGHTS, weights_path)
        load_backbone(model, state, drop=("fc",), new=HEAD)
    return model
