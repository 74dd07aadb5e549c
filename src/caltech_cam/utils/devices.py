"""The device a command's `device` key names."""

from __future__ import annotations

import torch


def resolve_device(name: str, key: str = "device") -> torch.device:
    """`auto` is CUDA when available, else the CPU; any other value must be a torch device string (`cpu`,
    `cuda`, `cuda:1`). ValueError naming `key` otherwise, and for CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{key}={name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}={name!r} but this machine has no CUDA device; use {key}=cpu or {key}=auto")
    return device
