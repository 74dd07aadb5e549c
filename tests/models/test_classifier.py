"""ClassifierModule: loss terms, optimizer groups and schedulers, checked against hand computations."""

from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from caltech_cam.data import make_preset
from caltech_cam.models import MODEL_SPECS, ClassifierModule, load_classifier
from caltech_cam.models.classifier import default_optimizer, default_scheduler
from caltech_cam.run.config import config_dir
from caltech_cam.run.schemas import SCHEMAS, signature_defaults
from tests.helpers import compose_train, one_step_checkpoint, tiny_overrides

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9}


def small(model: str = "my_inception_v3", **kwargs) -> ClassifierModule:
    preset = {"name": "inception", "resize": 80, "crop": 76}
    return ClassifierModule(model, 6, preset=preset, optimizer=SGD, **{"scheduler": {}, **kwargs})


class _Trainer:  # configure_optimizers only asks for the run's length
    max_epochs = 7
    estimated_stepping_batches = 12


# ------------------------------------------------------------------------------------------ one source of defaults
@pytest.mark.parametrize("model", sorted(MODEL_SPECS))
def test_every_argument_is_a_key_and_its_default_comes_from_the_signature(model):
    """The composed model node holds every constructor argument; those conf/classifier.yaml does not write down
    have the Python default (run.schemas), and the model's own file overrides what differs for it.
    optimizer=None/scheduler=None read the very files the composed config holds (one source, no copy)."""
    shared = OmegaConf.load(config_dir() / "classifier.yaml")
    own = OmegaConf.load(config_dir() / "model" / f"{model}.yaml")
    composed = compose_train([f"model={model}"]).model
    params = inspect.signature(ClassifierModule).parameters
    assert set(params) - {"self", "class_names"} <= set(composed)
    written = {k for k in shared if k != "defaults"}
    restated = written & set(signature_defaults(ClassifierModule, SCHEMAS["classifier"][1]))
    assert restated == set(), f"Python defaults restated in conf/classifier.yaml: {restated}"
    for key, default in signature_defaults(ClassifierModule, SCHEMAS["classifier"][1]).items():
        if key not in own:
            assert composed[key] == default, f"model.{key}"
    assert OmegaConf.to_container(composed.optimizer) == default_optimizer()
    assert OmegaConf.to_container(composed.scheduler) == default_scheduler()
    # What differs per model is what the registry and the weights say: pretrained where ImageNet weights exist.
    assert composed.pretrained == (model != "my_inception_v3")
    # Overridden like any key, without `+`; an argument that does not exist is still Hydra's error.
    assert compose_train([f"model={model}", "model.backbone_lr_mult=0.3"]).model.backbone_lr_mult == 0.3


def test_the_callbacks_defaults_come_from_their_signatures():
    from caltech_cam.callbacks import GradCAMLogger, StepTimer

    callbacks = compose_train([]).callbacks
    for key, target in (("grad_cam", GradCAMLogger), ("step_timing", StepTimer)):
        node = OmegaConf.to_container(callbacks[key])
        assert node.pop("_target_").endswith(target.__name__) and node.pop("enabled") is True
        assert node == signature_defaults(target), key
    # The callbacks keep the order they had when the YAML spelled them out (it decides the hook order).
    assert list(callbacks)[-2:] == ["step_timing", "grad_cam"]


def test_default_scheduler_is_one_cosine_over_the_run():
    module = ClassifierModule("my_inception_v3", 3, preset={"name": "inception", "resize": 40, "crop": 36})
    module.trainer = _Trainer()  # type: ignore[assignment]
    config = module.configure_optimizers()
    assert type(config["optimizer"]).__name__ == "SGD" and config["lr_scheduler"]["interval"] == "epoch"
    assert config["lr_scheduler"]["scheduler"].T_max == 7
    assert module.hparams.backbone_lr_mult == 0.1 and module.hparams.pretrained is False
    head, backbone = config["optimizer"].param_groups
    assert (head["lr"], backbone["lr"]) == pytest.approx((0.01, 0.001))


def test_head_and_backbone_learning_rates():
    module = small(backbone_lr_mult=0.25)
    optimizer = module.configure_optimizers()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["head"]["lr"] == pytest.approx(0.1) and groups["backbone"]["lr"] == pytest.approx(0.025)
    head_ids = {id(p) for p in groups["head"]["params"]}
    assert head_ids == {id(module.model.fc.weight), id(module.model.fc.bias)}
    total = sum(len(g["params"]) for g in optimizer.param_groups)
    assert total == len(list(module.model.parameters()))


def test_label_smoothing_matches_its_definition():
    torch.manual_seed(0)
    module = small(label_smoothing=0.2).eval()
    x, y = torch.randn(3, 1, 76, 76), torch.tensor([0, 4, 5])
    loss, logits, _ = module._step((x, y))
    log_p = logits.log_softmax(dim=1)
    # (1 − ε)·(−log p_y) + ε·mean_k(−log p_k)  (Szegedy et al. 2016)
    by_hand = (0.8 * -log_p.gather(1, y[:, None])[:, 0] + 0.2 * -log_p.mean(dim=1)).mean()
    assert float(loss.detach()) == pytest.approx(float(by_hand.detach()), rel=1e-5)


def test_inception_aux_loss_weight_at_299_px():
    module = ClassifierModule(
        "inception_v3",
        5,
        preset={"name": "inception", "resize": 320, "crop": 299},
        optimizer=SGD,
        aux_weight=0.4,
    ).train()
    x, y = torch.randn(2, 1, 299, 299), torch.tensor([1, 3])
    torch.manual_seed(0)
    loss, _, _ = module._step((x, y))
    torch.manual_seed(0)  # same dropout masks
    logits, aux = module.model(x)
    by_hand = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
    loss, by_hand = loss.detach(), by_hand.detach()
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(loss) != pytest.approx(float(F.cross_entropy(logits, y).detach()), rel=1e-3)


def test_onecycle_peaks_per_group_over_the_whole_run(tmp_path, synthetic_root):
    from caltech_cam.run.build import build_datamodule, build_module

    cfg = compose_train(
        [*tiny_overrides(synthetic_root, tmp_path), "model/scheduler=onecycle", "model.backbone_lr_mult=0.5"]
    )
    cfg.paths.output_dir = str(tmp_path)
    module = build_module(cfg, build_datamodule(cfg.data))
    module.trainer = _Trainer()  # type: ignore[assignment]
    config = module.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    assert scheduler.total_steps == 12
    lr = cfg.model.optimizer.lr
    peaks = [g["max_lr"] for g in config["optimizer"].param_groups]
    assert peaks == pytest.approx([lr, lr * 0.5])
    # OneCycle starts at max_lr / div_factor (25)
    assert [g["lr"] for g in config["optimizer"].param_groups] == pytest.approx([lr / 25, lr * 0.5 / 25])
    assert not math.isnan(peaks[0])


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    """A checkpoint written by today's code: one step of my_inception_v3 at 36 px on random data."""
    return one_step_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "epoch000.ckpt",
        "my_inception_v3",
        ["a", "b", "c"],
        {"name": "inception", "resize": 40},
        torch.randn(4, 1, 35, 35),
        torch.tensor([0, 1, 2, 0]),
    )


def test_checkpoint_records_the_whole_preset_in_plain_values(checkpoint):
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["preset"] == make_preset("inception", resize=40).as_dict()
    assert hparams["preset"]["crop"] == 35 and hparams["preset"]["in_channels"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        module = load_classifier(checkpoint)
    assert module.preset == make_preset("inception", resize=40) and module.class_names == ["a", "b", "c"]
    assert not module.training


def test_checkpoint_in_the_old_layout_loads_with_a_warning(checkpoint, tmp_path):
    """The layout before this change: the preset as name + size options. Mapped, warned, same model."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["preset"] = {
        "name": "inception",
        "resize": 40,
        "crop": None,
        "random_resized_crop": False,
        "hflip": False,
    }
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.warns(FutureWarning, match=r"old layout, name and sizes only.*preset 'inception'"):
        module = load_classifier(old)
    new = load_classifier(checkpoint)
    assert module.preset == new.preset and module.preset.output_size == 35
    x = torch.randn(2, 1, 35, 35)
    with torch.no_grad():
        torch.testing.assert_close(module(x), new(x), rtol=0, atol=0)


def test_missing_checkpoint_names_the_files_train_writes(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"epochNNN\.ckpt.*last\.ckpt") as info:
        load_classifier(tmp_path / "best.ckpt")
    assert "best.ckpt or" not in str(info.value)
    not_lightning = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(1)}, not_lightning)
    with pytest.raises(ValueError, match=r"not a Lightning checkpoint.*'fc.weight'"):
        load_classifier(not_lightning)
