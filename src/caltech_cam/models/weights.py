"""Pretrained ImageNet weights: find them (hub cache, download or a file) and copy them into a backbone."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import Inception_V3_Weights, ResNet50_Weights
from torchvision.models._api import WeightsEnum

from .transfer import TransferReport

# The ImageNet checkpoints the backbones start from (my_resnet50 reuses resnet50's: same backbone keys).
RESNET50_WEIGHTS: WeightsEnum = ResNet50_Weights.IMAGENET1K_V2
INCEPTION_V3_WEIGHTS: WeightsEnum = Inception_V3_Weights.IMAGENET1K_V1


log = logging.getLogger(__name__)

# How long a non-zero rank waits for its node's rank 0 to fetch the weights (seconds).
WAIT_ENV = "CALTECH_CAM_WEIGHTS_WAIT_S"
DEFAULT_WAIT_S = 1800.0


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
        if not cached.is_file() and node_local_rank() != 0:
            _wait_for_node_rank_zero(weights, cached)
        if node_local_rank() == 0:  # an earlier launch's failure must not stop this launch's waiting ranks
            with contextlib.suppress(OSError):
                _failure_marker(cached).unlink(missing_ok=True)
        try:
            state = _get_state_dict(weights, cached, progress)
        except MissingWeightsError as err:
            if node_local_rank() == 0:  # tell the ranks waiting for this file not to wait any longer
                with contextlib.suppress(OSError):  # a read-only cache: they time out instead
                    _failure_marker(cached).parent.mkdir(parents=True, exist_ok=True)
                    _failure_marker(cached).write_text(f"{launch_id()}\n{err}")
            raise
        origin = str(cached)
    # Lightning checkpoints and pickled modules are not plain state dicts: say so instead of failing on key names.
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{origin} is not a plain state dict (name -> tensor), as torchvision's .pth files are"
        )
    log.info("Pretrained weights: %s from %s", weights if weights_path is None else "a state dict", origin)
    return dict(state)


def node_local_rank() -> int:
    """This process's rank on its node when several were started at once (torchrun/Lightning: LOCAL_RANK, SLURM:
    SLURM_LOCALID); 0 for a single process and for the first rank of a node, the one that downloads."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _failure_marker(cached: Path) -> Path:
    return cached.with_name(cached.name + ".caltech_cam-failed")


def launch_id() -> str:
    """What the ranks of one launch share and the next launch does not: the SLURM job and its restart, the torchrun
    run, or the rendezvous address."""
    env = os.environ
    if "SLURM_JOB_ID" in env:
        return f"slurm:{env['SLURM_JOB_ID']}.{env.get('SLURM_RESTART_COUNT', '0')}"
    if "TORCHELASTIC_RUN_ID" in env:
        return f"torchrun:{env['TORCHELASTIC_RUN_ID']}"
    return f"rendezvous:{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}"


def _failure_of_this_launch(marker: Path, started: float) -> str | None:
    """Rank 0's error message if the marker is this launch's (same launch id, written since shortly before this
    rank began to wait); a marker left by another or an earlier launch is not this one's answer."""
    try:
        written, text = marker.stat().st_mtime, marker.read_text()
    except OSError:
        return None
    owner, _, message = text.partition("\n")
    return message if owner == launch_id() and written >= started - 300 else None


def _missing(weights: WeightsEnum, cached: Path, reason: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"pretrained weights {weights} could not be loaded: {cached} is not in the torch hub cache "
        f"and {reason}. Either put that file at {cached} (the hub cache is $TORCH_HOME/hub/checkpoints, "
        f"TORCH_HOME defaults to ~/.cache/torch; on a machine with network, `python -m caltech_cam.prepare "
        f"weights=[<model>]` fetches it there), or pass the file with model.weights_path=/path/to/{cached.name}; "
        f"or train from scratch with model.pretrained=false."
    )


def _get_state_dict(weights: WeightsEnum, cached: Path, progress: bool) -> Mapping[str, Tensor]:
    """torchvision's hub cache, else a download into it (atomic: torch.hub writes a temporary file, then moves it)."""
    try:
        state = weights.get_state_dict(progress=progress, map_location="cpu", weights_only=True)
    except OSError as err:  # URLError, DNS failure, timeout, read-only cache: the file cannot be had
        raise _missing(weights, cached, f"downloading {weights.url} failed ({err})") from err
    _failure_marker(cached).unlink(missing_ok=True)
    return state


def _wait_for_node_rank_zero(weights: WeightsEnum, cached: Path) -> None:
    """Ranks started together (SLURM, torchrun, several nodes) do not all download: rank 0 of each node does, the
    others wait here for the file, or for rank 0's failure, or for `$CALTECH_CAM_WEIGHTS_WAIT_S` seconds."""
    timeout = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S))
    started = time.time()
    log.info("Local rank %d waits for local rank 0 to fetch %s", node_local_rank(), cached)
    while not cached.is_file():
        failure = _failure_of_this_launch(_failure_marker(cached), started)
        if failure is not None:
            raise MissingWeightsError(f"local rank 0 could not fetch the weights this rank needs: {failure}")
        if time.time() - started > timeout:
            raise _missing(
                weights, cached, f"local rank 0 did not fetch it within {timeout:.0f} s (${WAIT_ENV})"
            )
        time.sleep(0.5)


def prefetch(weights: WeightsEnum, *, progress: bool = True) -> Path:
    """Put `weights` into the torch hub cache (download if missing) and return the file: for compute nodes that
    have no network, run this where there is one (`python -m caltech_cam.prepare weights=[resnet50]`)."""
    cached = hub_cache_path(weights)
    if not cached.is_file():
        _get_state_dict(weights, cached, progress)
    return cached


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
) -> TransferReport:
    """Copy the backbone tensors of `state` into `model`, strictly: every backbone key must be there, with its shape.

    `drop`: prefixes of `state` not to load (the ImageNet head). `new`: prefixes of `model` that the checkpoint
    does not hold (the new head, own buffers). `stem`: key of the first conv, summed over input channels if needed.
    Returns (and logs) what was copied and what starts fresh, as fractions of the parameters.
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
    report = TransferReport.of(model, copied=state)
    log.info("%s: pretrained weights loaded: %s", type(model).__name__, report.summary())
    return report


def load_matching(model: nn.Module, state: Mapping[str, Tensor], *, head: str) -> TransferReport:
    """Load a whole network's `state` into `model`, strictly, except the head `head`: its tensors are skipped
    (and the log says so) when their shapes differ, as an ImageNet head does from a head of another class count."""
    own = model.state_dict()
    skipped = [k for k in state if under(k, (head,)) and k in own and state[k].shape != own[k].shape]
    if skipped:
        log.info(
            "%s: the weights' head %s has %d outputs, this one %d: its tensors are skipped (%s), the head starts "
            "fresh",
            type(model).__name__,
            head,
            state[skipped[0]].shape[0],
            own[skipped[0]].shape[0],
            ", ".join(skipped),
        )
    kept = {k: v for k, v in state.items() if k not in skipped}
    return load_backbone(model, kept, drop=(), new=(head,) if skipped else ())
