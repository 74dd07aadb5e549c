"""`inception_v3`: torchvision's Inception-v3 taking the preset's input natively (1 gray channel or RGB)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models import Inception3

from caltech_cam.data.presets import IMAGENET_MEAN, IMAGENET_STD

from .registry import register_model
from .weights import INCEPTION_V3_WEIGHTS, fetch_state_dict, load_backbone

log = logging.getLogger(__name__)

HEAD = ("fc", "AuxLogits.fc")
# Below this size the aux head's 5x5 conv meets a smaller feature map and crashes in training.
AUX_MIN_SIZE = 299
STEM = "Conv2d_1a_3x3.conv.weight"


class InceptionV3(Inception3):
    """torchvision's Inception3 with any input channel count and a per-channel input affine.

    The pretrained weights expect Google's normalization (p − 0.5) / 0.5 of pixels p in [0, 1]. torchvision's
    `transform_input` maps ImageNet-normalized RGB to it by indexing channels 0..2, so a gray input breaks it.
    Here `_transform_input` is x · input_scale + input_shift, with per-channel buffers built from the preset's
    mean/std (identity when training from scratch). The buffers are saved in the state dict, so a checkpoint
    reloaded into a model built with pretrained=False computes the same function.
    Module names are torchvision's (Mixed_5d, Mixed_6e, Mixed_7c, AuxLogits, fc, ...).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 3,
        aux_logits: bool = True,
        init_weights: bool = True,
        input_scale: Sequence[float] | None = None,
        input_shift: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            num_classes=num_classes, aux_logits=aux_logits, transform_input=False, init_weights=init_weights
        )
        if in_channels != 3:
            self.Conv2d_1a_3x3.conv = nn.Conv2d(in_channels, 32, kernel_size=3, stride=2, bias=False)
            if init_weights:  # torchvision's initialization of the conv it replaces
                nn.init.trunc_normal_(self.Conv2d_1a_3x3.conv.weight, mean=0.0, std=0.1, a=-2, b=2)
        scale = torch.tensor(input_scale if input_scale is not None else [1.0] * in_channels)
        shift = torch.tensor(input_shift if input_shift is not None else [0.0] * in_channels)
        self.register_buffer("input_scale", scale.view(1, in_channels, 1, 1))
        self.register_buffer("input_shift", shift.view(1, in_channels, 1, 1))

    def _transform_input(self, x: Tensor) -> Tensor:
        return x * self.input_scale + self.input_shift


def google_affine(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    """(scale, shift) with x · scale + shift = (p − 0.5) / 0.5 for x = (p − mean) / std, channel by channel."""
    return [s / 0.5 for s in std], [(m - 0.5) / 0.5 for m in mean]


def pretrained_input_affine(
    name: str, in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[list[float], list[float]]:
    """`google_affine` of the preset's statistics; without them, RGB is taken as ImageNet-normalized (what
    torchvision's `transform_input` assumes) and gray is a ValueError (its statistics cannot be guessed)."""
    if mean is None or std is None:
        if in_channels != 3:
            raise ValueError(
                f"{name} with pretrained weights and a gray input needs input_mean/input_std "
                "(the preset's normalization) to map it to the weights' (p - 0.5) / 0.5"
            )
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return google_affine(mean, std)


# Gray (the stem's RGB filters summed) or RGB: both presets.
@register_model(
    "inception_v3",
    preset="inception",
    in_channels=(1, 3),
    cam_layers=("Mixed_5d", "Mixed_6e", "Mixed_7c"),
    head=HEAD,
    weights=INCEPTION_V3_WEIGHTS,
)
def build_inception_v3(
    num_classes: int,
    *,
    in_channels: int = 3,
    pretrained: bool = False,
    weights_path: str | None = None,
    image_size: int | None = None,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
) -> InceptionV3:
    """Inception-v3 with new `fc` and `AuxLogits.fc`; the aux head only when `image_size` is None or >= 299."""
    aux = image_size is None or image_size >= AUX_MIN_SIZE
    if not aux:
        log.info(
            "inception_v3: image size %d < %d px, the aux head is turned off (it crashes below %d px in training); "
            "the loss is the main head's only",
            image_size,
            AUX_MIN_SIZE,
            AUX_MIN_SIZE,
        )
    scale = shift = None
    if pretrained:
        scale, shift = pretrained_input_affine("inception_v3", in_channels, input_mean, input_std)
    # init_weights=False when pretrained: torchvision's truncated-normal init is slow and overwritten anyway.
    model = InceptionV3(
        num_classes,
        in_channels=in_channels,
        aux_logits=aux,
        init_weights=not pretrained,
        input_scale=scale,
        input_shift=shift,
    )
    if pretrained:
        state = fetch_state_dict(INCEPTION_V3_WEIGHTS, weights_path)
        # Without our aux head the checkpoint's whole AuxLogits is unused.
        drop = HEAD if aux else ("fc", "AuxLogits")
        load_backbone(model, state, drop=drop, new=(*HEAD, "input_scale", "input_shift"), stem=STEM)
    return model
