"""`resnet50`: torchvision's ResNet-50 with its `fc` sized for our classes."""

from __future__ import annotations

from torchvision.models import ResNet, resnet50

from .weights import RESNET50_WEIGHTS, fetch_state_dict, load_backbone

HEAD = ("fc",)


def build_resnet50(num_classes: int, *, pretrained: bool = False, weights_path: str | None = None) -> ResNet:
    """torchvision resnet50, `fc` 2048 -> num_classes; ImageNet backbone weights when `pretrained`."""
    model = resnet50(weights=None, num_classes=num_classes)
    if pretrained:
        state = fetch_state_dict(RESNET50_WEIGHTS, weights_path)
        load_backbone(model, state, drop=HEAD, new=HEAD)
    return model
