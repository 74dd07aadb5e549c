"""Checkpoints of `ClassifierModule`: the layout their hyperparameters are recorded in, the mapping of older
layouts onto today's (`upgrade_hparams`), and loading one for evaluation (`load_classifier`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from caltech_cam.data.presets import as_preset

if TYPE_CHECKING:
    from caltech_cam.models.classifier import ClassifierModule

# The layout of the hyperparameters a checkpoint records (key "hparams_format", not a constructor argument).
# 1 (no key): before architecture options; my_inception_v3 was torchvision's InceptionA block with BatchNorm.
# 2: `options` recorded whole (ModelSpec.options, defaults filled in).
HPARAMS_FORMAT = 2
# What an old (format 1) my_inception_v3 checkpoint was built as: the options that rebuild it exactly.
FORMAT1_OPTIONS = {"my_inception_v3": {"block": "inception_a", "batch_norm": True}}


def upgrade_hparams(hparams: Mapping[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """Hyperparameters of an older checkpoint in today's layout, with a FutureWarning naming what was mapped.

    Older checkpoints record the preset as its name and size options ({"name", "resize", "crop", ...}); it is
    rebuilt from today's definition of that preset (mean/std), which is what loading them always meant.
    Checkpoints before `hparams_format` 2 record no architecture options: my_inception_v3's are then those that
    rebuild it exactly (`FORMAT1_OPTIONS`: block=inception_a, batch_norm=true). The returned dict holds
    constructor arguments only (`hparams_format` is dropped).
    """
    hparams = dict(hparams)
    version = hparams.pop("hparams_format", 1)
    if version > HPARAMS_FORMAT:
        raise ValueError(
            f"{source} records hyperparameters in format {version}; this release reads formats up to "
            f"{HPARAMS_FORMAT}: load it with the release that wrote it or a newer one."
        )
    if version < 2 and "options" not in hparams and hparams.get("model_name") in FORMAT1_OPTIONS:
        hparams["options"] = dict(FORMAT1_OPTIONS[hparams["model_name"]])
        warnings.warn(
            f"{source} is a {hparams['model_name']} checkpoint from before architecture options; it is read as "
            f"model.options={hparams['options']} (the layout it was trained with; the default is now the "
            "study's block without BatchNorm). Re-save it (trainer.save_checkpoint) to record them; the old "
            "layout will stop loading in a later release.",
            FutureWarning,
            stacklevel=3,
        )
    preset = hparams.get("preset")
    if isinstance(preset, Mapping) and "in_channels" not in preset:
        hparams["preset"] = as_preset(preset).as_dict()
        warnings.warn(
            f"{source} records its preset in the old layout, name and sizes only ({dict(preset)}); it is read as "
            f"preset {preset['name']!r} with today's normalization. Re-save it (trainer.save_checkpoint) to keep "
            "the new layout; the old one will stop loading in a later release.",
            FutureWarning,
            stacklevel=3,
        )
    return hparams


def load_classifier(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> ClassifierModule:
    """A trained `ClassifierModule` from a `train` checkpoint, in eval mode (pretrained weights are not re-fetched).

    Checkpoints from older releases load too: their hyperparameters are mapped by `upgrade_hparams`. The module
    runs eagerly whatever `compile` the run trained with: evaluating or explaining is a pass or two, which
    compiling (minutes on a CPU) would cost more than it saves.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint not found: {path}. Expected a .ckpt written by `python -m caltech_cam.train`: "
            "<run dir>/checkpoints/epochNNN.ckpt (the best epochs, also named in <run dir>/metrics.json as "
            "best_checkpoint) or <run dir>/checkpoints/last.ckpt."
        )
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path} is not a Lightning checkpoint of ClassifierModule (it has {sorted(checkpoint)[:6]}, "
            "expected 'hyper_parameters' and 'state_dict')."
        )
    from caltech_cam.models.classifier import ClassifierModule

    hparams = upgrade_hparams(checkpoint["hyper_parameters"], source=str(path))
    module = ClassifierModule(**{**hparams, "pretrained": False, "weights_path": None, "compile": False})
    module.load_state_dict(checkpoint["state_dict"])
    return module.to(map_location).eval()
