"""`resnet50`: torchvision's ResNet-50 with its `fc` sized for our classes."""

from __future__ import annotations

from torchvision.models import ResNet, resnet50

from .registry import register_model
from .weights import RESNET50_WEIGHTS, fetch_state_dict, load_backbone

HEAD = ("fc",)
STAGES = ("layer1", "layer2", "layer3", "layer4")


# The pretrained stem assumes ImageNet-normalized RGB: 3 channels only.
@register_model(
    "resnet50", preset="resnet", in_channels=(3,), cam_layers=STAGES, head=HEAD, weights=RESNET50_WEIGHTS
)
def build_resnet50(
    num_classes: int, *, pretrained: bool = False, weights_path: str | None = None, **_: object
) -> ResNet:
    """torchvision resnet50, `fc` 2048 -> num_classes; ImageNet backbone weights when `pretrained`.

    Any input size works (adaptive pooling); the preset's normalization is ImageNet's, as the weights expect.
    """
    model = resnet50(weights=None, num_classes=num_classes)
    if pretrained:
        state = fetch_state_dict(RESNET50_WEIGHTS, weights_path)
        load_backbone(model, state, drop=HEAD, new=HEAD)
    return model
