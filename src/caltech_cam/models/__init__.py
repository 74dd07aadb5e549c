"""Backbones by name: `build_model(name, num_classes, ...)`, each declaring its preset and Grad-CAM layers."""

from .outputs import logits_of, split_outputs
from .registry import MODEL_SPECS, ModelSpec, UnknownModelError, build_model, get_spec
from .weights import MissingWeightsError

__all__ = [
    "MODEL_SPECS",
    "MissingWeightsError",
    "ModelSpec",
    "UnknownModelError",
    "build_model",
    "get_spec",
    "logits_of",
    "split_outputs",
]
