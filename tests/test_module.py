"""ClassifierModule: loss terms, optimizer groups and schedulers, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from caltech_cam.module import ClassifierModule
from tests.conftest import compose_train, tiny_overrides

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9}


def small(model: str = "my_inception_v3", **kwargs) -> ClassifierModule:
    preset = {"name": "inception", "resize": 80, "crop": 76}
    return ClassifierModule(model, 6, preset=preset, optimizer=SGD, **kwargs)


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
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


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
    assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(loss) != pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-3)


def test_onecycle_peaks_per_group_over_the_whole_run(tmp_path, synthetic_root):
    from caltech_cam.build import build_datamodule, build_module

    cfg = compose_train(
        [*tiny_overrides(synthetic_root, tmp_path), "model/scheduler=onecycle", "model.backbone_lr_mult=0.5"]
    )
    cfg.paths.output_dir = str(tmp_path)
    module = build_module(cfg, build_datamodule(cfg.data))

    class _Trainer:  # configure_optimizers only asks for the run's length
        estimated_stepping_batches = 12

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
