"""The two augmentation presets of the study, as torchvision.transforms.v2 pipelines on uint8 RGB tensors.

- ``resnet``: resize to 256x256 -> float in [0, 1] -> ImageNet mean/std per RGB channel -> 3x256x256.
- ``inception``: resize to 256x256 -> crop 224 (random in training, centre in evaluation) -> grayscale, ONE
  channel -> single-channel mean/std derived from ImageNet's RGB statistics -> 1x224x224.

The single-channel statistics: the gray image is g = 0.2989 R + 0.587 G + 0.114 B (ITU-R BT.601, the weights
torchvision's ``rgb_to_grayscale`` uses), so by linearity its mean is exactly
``mean_g = sum_c w_c mean_c = 0.4589``. Its std is ``sqrt(sum_cd w_c w_d rho_cd std_c std_d)``, which needs the
channel correlations rho. Natural images' RGB channels are strongly correlated (rho ~ 0.9), so the
independent-channel value ``sqrt(sum_c w_c^2 std_c^2) = 0.1504`` underestimates it badly; we take rho = 1,
``std_g = sum_c w_c std_c = 0.2256`` (at rho = 0.9 the formula gives 0.219, 3% less).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

PRESET_NAMES = ("resnet", "inception")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
GRAY_MEAN = (sum(w * m for w, m in zip(GRAY_WEIGHTS, IMAGENET_MEAN, strict=True)),)
GRAY_STD = (sum(w * s for w, s in zip(GRAY_WEIGHTS, IMAGENET_STD, strict=True)),)

STUDY_RESIZE = 256
STUDY_CROP = 224  # inception's crop; resizes other than 256 keep the ratio 224/256


@dataclass(frozen=True)
class Preset:
    """A named preprocessing recipe: geometry, colour, normalization, and its inverse for display."""

    name: str
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int
    crop: int | None
    random_resized_crop: bool = False
    hflip: bool = False

    @property
    def output_size(self) -> int:
        return self.crop if self.crop is not None else self.resize

    def transform(self, train: bool) -> Callable[[Tensor], Tensor]:
        """uint8 RGB (3, H, W) -> float (in_channels, S, S). Random crop and flips only when ``train``.

        With ``random_resized_crop`` the training geometry is a RandomResizedCrop straight to the output size
        (torchvision's default scale range 0.08-1), replacing resize + crop; evaluation never changes.
        """
        steps: list[Callable[[Tensor], Tensor]] = []
        if train and self.random_resized_crop:
            steps.append(v2.RandomResizedCrop((self.output_size, self.output_size), antialias=True))
        else:
            steps.append(v2.Resize((self.resize, self.resize), antialias=True))
            if self.crop is not None:
                steps.append(v2.RandomCrop(self.crop) if train else v2.CenterCrop(self.crop))
        if train and self.hflip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if self.in_channels == 1:
            # On floats, not uint8: no rounding of the gray level before normalization.
            steps.append(v2.Grayscale(num_output_channels=1))
        steps.append(v2.Normalize(list(self.mean), list(self.std)))
        return v2.Compose(steps)

    def eval_view(self, image: Tensor) -> Tensor:
        """uint8 RGB (..., 3, H, W) -> uint8 RGB (..., 3, S, S): what the model sees in evaluation, in colour
        and unnormalized (the backdrop for a CAM overlay of the inception preset)."""
        out = v2.functional.resize(image, [self.resize, self.resize], antialias=True)
        return out if self.crop is None else v2.functional.center_crop(out, [self.crop, self.crop])

    def denormalize(self, x: Tensor) -> Tensor:
        """float (..., C, S, S) -> uint8 (..., 3, S, S): x * std + mean, clamped to [0, 1], times 255, rounded;
        a gray channel is replicated to RGB."""
        if x.shape[-3] != self.in_channels:
            raise ValueError(
                f"preset {self.name} expects {self.in_channels} channel(s), got shape {tuple(x.shape)}"
            )
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        out = (x * std + mean).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        if self.in_channels == 1:
            out = out.expand(*out.shape[:-3], 3, *out.shape[-2:]).contiguous()
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists, numbers, strings): safe for hyperparameters and ``weights_only`` checkpoints."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preset:
        d = dict(values)
        d["mean"], d["std"] = tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"])
        return cls(**d)


def make_preset(
    name: str,
    *,
    resize: int | None = None,
    crop: int | None = None,
    random_resized_crop: bool = False,
    hflip: bool = False,
) -> Preset:
    """The study's preset ``name`` (see the module docstring), with optional size overrides.

    ``resize=None`` is 256. ``crop=None`` is the preset's default: none for ``resnet``; for ``inception`` 224
    at resize 256, else ``round(resize * 224 / 256)`` (so small test images keep the study's ratio).
    """
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESET_NAMES}")
    resize = STUDY_RESIZE if resize is None else int(resize)
    if resize < 1:
        raise ValueError(f"resize must be a positive number of pixels, got {resize}")
    if crop is None and name == "inception":
        crop = round(resize * STUDY_CROP / STUDY_RESIZE)
    if crop is not None and not 1 <= crop <= resize:
        raise ValueError(f"crop must be between 1 and resize={resize}, got {crop}")
    if name == "resnet":
        return Preset(name, 3, IMAGENET_MEAN, IMAGENET_STD, resize, crop, random_resized_crop, hflip)
    return Preset(name, 1, GRAY_MEAN, GRAY_STD, resize, crop, random_resized_crop, hflip)


def as_preset(preset: str | Mapping[str, Any]) -> Preset:
    """A `Preset` from its name, from a name with size overrides ({"name", "resize", "crop", ...}: `make_preset`),
    or from a whole recorded preset (`Preset.as_dict()`, as checkpoints hold it)."""
    if isinstance(preset, str):
        return make_preset(preset)
    if "in_channels" in preset:
        return Preset.from_dict(preset)
    options = dict(preset)
    return make_preset(options.pop("name"), **options)
