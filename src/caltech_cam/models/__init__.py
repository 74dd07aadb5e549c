"""Backbones by name: `build_model(name, num_classes, ...)`; each registers itself (`register_model`) beside its
builder, declaring its input channels, preset, Grad-CAM layers and head. Importing this package registers them.

`ClassifierModule` (classifier.py) is the LightningModule that fine-tunes any of them; `load_classifier`
(checkpoints.py) reads its checkpoints, those of older releases included."""

# Importing a backbone module registers it.
from . import any_timm, any_torchvision, inception, my_inception, my_resnet, resnet  # noqa: F401
from .checkpoints import load_classifier, upgrade_hparams
from .classifier import ClassifierModule
from .outputs import logits_of, split_outputs
from .registry import MODEL_SPECS, ModelSpec, UnknownModelError, build_model, get_spec, register_model
from .weights import MissingWeightsError

__all__ = [
    "MODEL_SPECS",
    "ClassifierModule",
    "MissingWeightsError",
    "ModelSpec",
    "UnknownModelError",
    "build_model",
    "get_spec",
    "load_classifier",
    "logits_of",
    "register_model",
    "split_outputs",
    "upgrade_hparams",
]
