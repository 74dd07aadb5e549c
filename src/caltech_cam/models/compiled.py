"""`torch.compile` for the training and evaluation forward, kept outside the module tree.

`.model` stays the eager module: layer names, hooks (the CAM engine runs it eagerly), state-dict and checkpoint
keys are those of an eager run, and a hook on compiled code would break its graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class CompiledHandle:
    """`torch.compile(model, mode, backend)`, built on first use and rebuilt if the model object changes.

    Held as a plain attribute, not a submodule (no `_orig_mod.` in names or state-dict keys). Compiled code does
    not pickle (`ddp_spawn`, `deepcopy`): a pickled handle carries its settings only and compiles again on first use.
    """

    def __init__(self, mode: str, backend: str) -> None:
        self.mode, self.backend = mode, backend
        self._compiled: Any = None

    def __call__(self, model: nn.Module) -> nn.Module:
        if self._compiled is None or self._compiled._orig_mod is not model:
            self._compiled = torch.compile(model, mode=self.mode, backend=self.backend)
        return self._compiled

    def __getstate__(self) -> dict[str, Any]:
        return {"mode": self.mode, "backend": self.backend, "_compiled": None}


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_options(enabled: bool, mode: str, backend: str) -> None:
    """Refuse an unknown `torch.compile` mode or backend when the module is built, not at the first step."""
    if mode not in COMPILE_MODES:
        raise ValueError(
            f"model.compile_mode={mode!r} is not a torch.compile mode; expected one of {COMPILE_MODES}."
        )
    if not enabled:
        return  # listing the backends imports torch._dynamo: only worth it when it will be used
    backends = torch._dynamo.list_backends(exclude_tags=())
    if backend not in backends:
        raise ValueError(
            f"model.compile_backend={backend!r} is not a torch.compile backend; expected one of {backends}."
        )
