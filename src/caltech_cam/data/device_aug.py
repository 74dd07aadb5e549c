"""The preset's steps after the resize, on a uint8 batch (B, 3, R, R) on the model's device (the uint8 cache's
second half): crop, flip, ToDtype, gray, normalize, each image with its own random draws.

torchvision's v2 transforms draw one set of parameters per call, so ``v2.RandomCrop`` on a batch crops every image
at the same offset; here offsets, flips and boxes are drawn per image and applied with index arithmetic. The
colour steps are torchvision's own functionals (elementwise, so batched = per image, bit for bit): evaluation gives
exactly the live path's tensors.

RandomResizedCrop (``preset.random_resized_crop``) here samples boxes of the cached square R x R image, like
``v2.RandomResizedCrop.get_params`` does on the original, and resamples them with ``roi_align`` (bilinear, averaged
over ceil(box / output) samples per pixel). It is not the live RandomResizedCrop: the original's aspect ratio and
resolution are gone (a box of a 256 x 256 square, not of the 300 x 500 photo), and the filter differs. The study's
presets do not use it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as F

from caltech_cam.data.presets import Preset

# v2.RandomResizedCrop's defaults (the live path's).
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_RRC_TRIES = 10


def crop_windows(images: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """(B, C, H, W) -> (B, C, size, size): image b's window with corner (top[b], left[b]), by one gather."""
    b, c, _, w = images.shape
    steps = torch.arange(size, device=images.device)
    rows = (top.view(b, 1) + steps).view(b, size, 1)
    cols = (left.view(b, 1) + steps).view(b, 1, size)
    flat = (rows * w + cols).view(b, 1, size * size).expand(b, c, size * size)
    return images.flatten(2).gather(2, flat).view(b, c, size, size)


def random_crop(images: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """Each image's own uniformly drawn size x size window (v2.RandomCrop per image, without padding)."""
    b, _, h, w = images.shape
    top = torch.randint(0, h - size + 1, (b,), generator=generator, device=images.device)
    left = torch.randint(0, w - size + 1, (b,), generator=generator, device=images.device)
    return crop_windows(images, top, left, size)


def center_crop(images: Tensor, size: int) -> Tensor:
    """v2.CenterCrop's window (its rounding of the offsets) for every image."""
    return F.center_crop(images, [size, size])


def random_flip(images: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Each image mirrored left-right with probability ``p``, independently."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def random_resized_boxes(
    n: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = RRC_SCALE,
    ratio: tuple[float, float] = RRC_RATIO,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(n, 4) int boxes (top, left, h, w) drawn per image as ``v2.RandomResizedCrop.get_params`` does: area
    fraction ~ U(scale), log aspect ratio ~ U(log ratio), the first of 10 tries that fits, else the central crop
    of the closest allowed ratio."""
    area = height * width
    u = torch.rand(n, _RRC_TRIES, 2, generator=generator, device=device, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.sqrt(target * aspect).round().long()
    h = torch.sqrt(target / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)  # first fitting try (0 when none fits)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    ok = fits.any(dim=1)
    h = torch.where(ok, h, torch.full_like(h, fh))
    w = torch.where(ok, w, torch.full_like(w, fw))
    pos = torch.rand(n, 2, generator=generator, device=device, dtype=torch.float64)
    top = torch.where(ok, (pos[:, 0] * (height - h + 1)).floor().long(), (height - h) // 2)
    left = torch.where(ok, (pos[:, 1] * (width - w + 1)).floor().long(), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def resized_crop(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Float (B, C, H, W) -> (B, C, size, size): box b = (top, left, h, w) of image b resampled by ``roi_align``
    (aligned pixel centres; each output pixel averages ceil(h / size) x ceil(w / size) bilinear samples)."""
    top, left, h, w = boxes.to(images.dtype).unbind(1)
    index = torch.arange(images.shape[0], device=images.device, dtype=images.dtype)
    rois = torch.stack([index, left, top, left + w, top + h], dim=1)
    return roi_align(images, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def finish_preset(
    images: Tensor, preset: Preset, train: bool, generator: torch.Generator | None = None
) -> Tensor:
    """uint8 RGB (B, 3, R, R) at ``preset.resize`` -> the model input float (B, in_channels, S, S), as
    ``preset.transform(train)`` after its resize: crop (random per image / centre), flip per image, ToDtype
    scale, BT.601 gray, normalize. Random draws come from ``generator`` (on the images' device) or the global RNG.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a uint8 RGB batch (B, 3, R, R), got {images.dtype} {tuple(images.shape)}")
    if images.shape[-2:] != (preset.resize, preset.resize):
        raise ValueError(
            f"expected images resized to {preset.resize} x {preset.resize} (preset {preset.name}), "
            f"got {tuple(images.shape[-2:])}"
        )
    size = preset.output_size
    if train and preset.random_resized_crop:
        boxes = random_resized_boxes(
            images.shape[0], preset.resize, preset.resize, generator=generator, device=images.device
        )
        x = resized_crop(F.to_dtype(images, torch.float32, scale=True), boxes, size)
    else:
        if preset.crop is not None:
            images = random_crop(images, size, generator) if train else center_crop(images, size)
        x = F.to_dtype(images, torch.float32, scale=True)
    if train and preset.hflip:
        x = random_flip(x, generator=generator)  # a permutation: commutes with the elementwise steps
    if preset.in_channels == 1:
        x = F.rgb_to_grayscale(x, num_output_channels=1)  # on floats, as the live path (BT.601 weights)
    return F.normalize(x, list(preset.mean), list(preset.std))
