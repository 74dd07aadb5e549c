"""Pretrained ImageNet weights: find them (hub cache, download or a file) and copy them into a backbone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import Inception_V3_Weights, ResNet50_Weights
from torchvision.models._api import WeightsEnum

# The ImageNet checkpoints the backbones start from (my_resnet50 reuses resnet50's: same backbone keys).
RESNET50_WEIGHTS: WeightsEnum = ResNet50_Weights.IMAGENET1K_V2
INCEPTION_V3_WEIGHTS: WeightsEnum = Inception_V3_Weights.IMAGENET1K_V1


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are neither in the torch hub cache nor downloadable (and no `weights_path` was given)."""


def hub_cache_path(weights: WeightsEnum) -> Path:
    """Where torchvision's weights API looks for `weights` before downloading: `$TORCH_HOME/hub/checkpoints/<file>`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def fetch_state_dict(
    weights: WeightsEnum, weights_path: str | None = None, *, progress: bool = True
) -> dict[str, Tensor]:
    """The state dict in `weights_path` if given, else torchvision's `weights` (hub cache first, then download)."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.weights_path={weights_path!r}: no such file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        origin = str(path)
    else:
        cached = hub_cache_path(weights)
        try:
            state = weights.get_state_dict(progress=progress, map_location="cpu", weights_only=True)
        except OSError as err:  # URLError, DNS failure, timeout, read-only cache: the file cannot be had
            raise MissingWeightsError(
                f"pretrained weights {weights} could not be loaded: {cached} is not in the torch hub cache "
                f"and downloading {weights.url} failed ({err}). Either put that file at {cached} "
                f"(the hub cache is $TORCH_HOME/hub/checkpoints, TORCH_HOME defaults to ~/.cache/torch), "
                f"or pass the file with model.weights_path=/path/to/{cached.name}; "
                f"or train from scratch with model.pretrained=false."
            ) from err
        origin = str(cached)
    # Lightning checkpoints and pickled modules are not plain state dicts: say so instead of failing on key names.
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{origin} is not a plain state dict (name -> tensor), as torchvision's .pth files are"
        )
    return dict(state)


def under(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `key` is the module/parameter `p` or lies below it (`p.`...), for some `p` in `prefixes`."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def sum_input_channels(weight: Tensor, in_channels: int) -> Tensor:
    """Stem filters for `in_channels` inputs from RGB filters: W_gray = Σ_c W_c when in_channels == 1.

    conv(gray, Σ_c W_c) == conv(gray replicated to 3 channels, W), at a third of the stem cost.
    """
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    raise ValueError(f"cannot adapt a {weight.shape[1]}-channel stem to {in_channels} input channels")


def load_backbone(
    model: nn.Module,
    state: Mapping[str, Tensor],
    *,
    drop: tuple[str, ...],
    new: tuple[str, ...],
    stem: str | None = None,
) -> None:
    """Copy the backbone tensors of `state` into `model`, strictly: every backbone key must be there, with its shape.

    `drop`: prefixes of `state` not to load (the ImageNet head). `new`: prefixes of `model` that the checkpoint
    does not hold (the new head, own buffers). `stem`: key of the first conv, summed over input channels if needed.
    """
    state = {k: v for k, v in state.items() if not under(k, drop)}
    own = model.state_dict()
    if stem is not None and stem in state and stem in own:
        state[stem] = sum_input_channels(state[stem], own[stem].shape[1])

    # Old checkpoints lack BatchNorm's num_batches_tracked; it is a counter, not a weight.
    def counted(keys: set[str]) -> set[str]:
        return {k for k in keys if not k.endswith("num_batches_tracked")}

    expected = counted({k for k in own if not under(k, new)})
    missing = sorted(expected - counted(set(state)))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in sorted(set(state) & set(own))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"the pretrained state dict does not fit {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)}), "
            f"wrong shapes {wrong_shape[:5]}"
        )
    model.load_state_dict(state, strict=False)
