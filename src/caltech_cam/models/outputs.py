"""What a backbone returns: logits, or (logits, aux_logits) for InceptionV3 with its auxiliary head in training."""

from __future__ import annotations

from torch import Tensor


def split_outputs(output: object) -> tuple[Tensor, Tensor | None]:
    """(logits, aux_logits or None) from a tensor, a tuple or torchvision's `InceptionOutputs`.

    The logits must be (B, num_classes): anything else is a ValueError naming what the model returned.
    """
    aux = None
    if isinstance(output, (tuple, list)) and output:
        aux = output[1] if len(output) > 1 and isinstance(output[1], Tensor) else None
        output = output[0]
    if not isinstance(output, Tensor) or output.ndim != 2:
        what = (
            f"a tensor of shape {tuple(output.shape)}"
            if isinstance(output, Tensor)
            else type(output).__name__
        )
        raise ValueError(f"the model returned {what}; expected logits of shape (B, num_classes)")
    return output, aux


def logits_of(output: object) -> Tensor:
    """The logits of `split_outputs(output)`."""
    return split_outputs(output)[0]
