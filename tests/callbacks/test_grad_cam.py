"""GradCAMLogger: what reaches TensorBoard, under fit / validate / DDP, and that it changes nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from caltech_cam.callbacks.grad_cam import GradCAMLogger, select_probe
from caltech_cam.cam.scoring import select_images
from tests.helpers import compose_train, run_dirs, tiny_overrides


def events_of(folder: Path) -> list[EventAccumulator]:
    accumulators = []
    for file in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(file), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        accumulators.append(acc)
    return accumulators


def scalar_values(accumulators: list[EventAccumulator], tag: str) -> list[float]:
    """A tag's values over several event files, in file order."""
    return [s.value for acc in accumulators if tag in acc.Tags()["scalars"] for s in acc.Scalars(tag)]


def run_train(tmp_path: Path, root: Path, *extra: str, model: str = "resnet50") -> tuple[dict, Path]:
    from caltech_cam.train import train

    cfg = compose_train([*tiny_overrides(root, tmp_path, model), *extra])
    out = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    cfg.paths.output_dir = str(out)
    return train(cfg), out


# ------------------------------------------------------------------------------------------------ probe set
def test_probe_spreads_over_classes_and_includes_the_last_one():
    labels = [c for c in range(10) for _ in range(3)]  # 10 classes x 3 images, class 9 = clutter
    probe = select_probe(labels, 4)
    assert [labels[i] for i in probe] == [0, 3, 6, 9]
    assert probe == [0, 9, 18, 27]  # the first image of each chosen class
    assert select_probe(labels, 4) == probe


def test_probe_round_robins_when_images_outnumber_classes():
    labels = [0, 0, 0, 1, 1, 2]
    assert select_probe(labels, 5) == [0, 3, 5, 1, 4]
    assert select_probe(labels, 50) == [0, 3, 5, 1, 4, 2]


def test_probe_rejects_nonsense():
    with pytest.raises(ValueError, match="num_images"):
        select_probe([0, 1], 0)
    with pytest.raises(ValueError, match="empty"):
        select_probe([], 3)


def test_callback_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"nope.*gradcam"):
        GradCAMLogger(method="nope")


# ------------------------------------------------------------------------------------------------ fit
@pytest.mark.slow  # end to end: trains
def test_fit_logs_each_layer_and_overview_at_every_validation(tmp_path, synthetic_root):
    _results, out = run_train(tmp_path, synthetic_root, "trainer.max_epochs=2", "test=false")
    (events,) = events_of(out / "tensorboard")
    images = events.Tags()["images"]
    layers = ["layer1", "layer2", "layer3", "layer4"]
    assert sorted(images) == sorted([f"gradcam/{layer}" for layer in layers] + ["gradcam/overview"])
    steps = [e.step for e in events.Images("gradcam/overview")]
    assert len(steps) == 2 and steps[0] < steps[1]
    # Images are logged at trainer.global_step (optimizer steps so far); Lightning files epoch-end scalars
    # one step earlier (the index of the last batch), so the two series are one apart.
    val_steps = [e.step for e in events.Scalars("val/acc_top1")]
    assert steps == [s + 1 for s in val_steps]
    # 4 probe images at 64 px: the overview has 1 + 4 columns, a per-layer grid 2 columns.
    overview = events.Images("gradcam/overview")[-1]
    per_layer = events.Images("gradcam/layer1")[-1]
    assert overview.width > per_layer.width and overview.height == per_layer.height
    pictures = {layer: events.Images(f"gradcam/{layer}")[-1].encoded_image_string for layer in layers}
    assert len(set(pictures.values())) == len(layers), "per-layer grids should differ"
    for name in ("average_drop", "increase_in_confidence"):
        for layer in layers:
            values = [s.value for s in events.Scalars(f"gradcam/{name}/{layer}")]
            assert len(values) == 2 and all(0.0 <= v <= 100.0 for v in values)


def test_validate_path_runs_under_inference_mode(tmp_path, synthetic_root):
    import lightning as L

    from caltech_cam.run.build import build_datamodule, build_module

    cfg = compose_train(tiny_overrides(synthetic_root, tmp_path))
    cfg.paths.output_dir = str(tmp_path / "v")
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    logger = TensorBoardLogger(str(tmp_path / "v"), name="", version="")
    trainer = L.Trainer(
        accelerator="cpu",
        logger=logger,
        callbacks=[GradCAMLogger(num_images=3, strict=True)],
        enable_progress_bar=False,
        limit_val_batches=1,
    )
    assert trainer.validate(module, datamodule=datamodule)
    (events,) = events_of(tmp_path / "v")
    assert len(events.Images("gradcam/overview")) == 1


def _fit_weights(tmp_path: Path, root: Path, callbacks: list, name: str) -> dict[str, torch.Tensor]:
    import lightning as L

    from caltech_cam.run.build import build_datamodule, build_module

    cfg = compose_train(tiny_overrides(root, tmp_path))
    cfg.paths.output_dir = str(tmp_path / name)
    L.seed_everything(0, workers=True)
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=TensorBoardLogger(str(tmp_path / name), name="", version=""),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_checkpointing=False,
        deterministic=True,
    )
    trainer.fit(module, datamodule=datamodule)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.slow  # end to end: trains
def test_callback_changes_nothing_in_training(tmp_path, synthetic_root):
    with_cam = _fit_weights(tmp_path, synthetic_root, [GradCAMLogger(num_images=4, strict=True)], "on")
    without = _fit_weights(tmp_path, synthetic_root, [], "off")
    assert events_of(tmp_path / "on")[0].Tags()["images"], "the callback did run"
    assert with_cam.keys() == without.keys()
    changed = [k for k in with_cam if not torch.equal(with_cam[k], without[k])]
    assert changed == [], f"weights/buffers differ: {changed[:5]}"


def _built(tmp_path: Path, root: Path):
    from caltech_cam.run.build import build_datamodule, build_module

    cfg = compose_train(tiny_overrides(root, tmp_path))
    cfg.paths.output_dir = str(tmp_path / "built")
    datamodule = build_datamodule(cfg.data)
    return datamodule, build_module(cfg, datamodule)


class _Steps(L.Callback):
    """Counts the training batches that started."""

    def __init__(self) -> None:
        self.started = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.started += 1


def _bare_trainer(*callbacks: L.Callback) -> L.Trainer:
    """One CPU epoch, nothing written: for checks that must stop before the first step."""
    return L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=list(callbacks),
    )


def test_a_wrong_layer_stops_the_run_before_training_even_when_not_strict(tmp_path, synthetic_root):
    # The same config `train` reads: strict=false used to let this reach the first validation end as a warning.
    extra = ("trainer.max_epochs=2", "callbacks.grad_cam.layers=[layer4,no_such_layer]")
    with pytest.raises(
        ValueError,
        match=r"unknown layer 'no_such_layer'; the model's CAM layers are \['layer1'.*valid names: conv1",
    ):
        run_train(tmp_path, synthetic_root, *extra, "callbacks.grad_cam.strict=false")
    (out,) = tmp_path.glob("run-*")
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()
    # In process, with a counter: setup raised before the sanity check and the first step.
    datamodule, module = _built(tmp_path, synthetic_root)
    steps = _Steps()
    trainer = _bare_trainer(GradCAMLogger(layers=["no_such_layer"], strict=False), steps)
    with pytest.raises(ValueError, match="no_such_layer"):
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 0 and steps.started == 0


def test_a_module_without_what_the_callback_needs_is_named_before_training(tmp_path, synthetic_root):
    datamodule, module = _built(tmp_path, synthetic_root)
    del module.cam_layers, module.preset
    steps = _Steps()
    trainer = _bare_trainer(GradCAMLogger(strict=False), steps)
    with pytest.raises(
        TypeError,
        match=r"GradCAMLogger needs a LightningModule with \.model, \.cam_layers, \.class_names, \.preset "
        r"\(see caltech_cam.cam.Explainable\); ClassifierModule has no \.cam_layers, \.preset",
    ):
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 0 and steps.started == 0


def test_no_datamodule_is_named_before_validation(tmp_path, synthetic_root):
    datamodule, module = _built(tmp_path, synthetic_root)
    datamodule.prepare_data()  # outside a Trainer: the data contract's two steps by hand
    datamodule.setup("validate")
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[GradCAMLogger()]
    )
    with pytest.raises(RuntimeError, match=r"needs a datamodule with a `val_dataset`.*got no datamodule"):
        trainer.validate(module, dataloaders=datamodule.val_dataloader())


def test_method_aliases_become_the_canonical_name():
    assert GradCAMLogger(method="Grad-CAM++").method == "gradcampp"
    with pytest.raises(ValueError, match=r"unknown CAM method 'gradcam\+\+\+'.*gradcampp \(also gradcam\+\+"):
        GradCAMLogger(method="gradcam+++")


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"num_images": 0}, "num_images"), ({"colormap": "x"}, "colormap")]
)
def test_other_settings_are_checked_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradCAMLogger(**kwargs)


@pytest.mark.slow  # end to end: trains
def test_a_runtime_failure_strict_raises_lenient_warns_once(tmp_path, synthetic_root, caplog):
    # `fc` exists (so setup accepts it) but outputs (B, N), not a 4-D map: only the first pass can tell.
    datamodule, module = _built(tmp_path, synthetic_root)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=TensorBoardLogger(str(tmp_path / "strict"), name="", version=""),
        enable_progress_bar=False,
        limit_val_batches=1,
        callbacks=[GradCAMLogger(num_images=2, layers=["layer4", "fc"], strict=True)],
    )
    with pytest.raises(ValueError, match=r"layer 'fc' outputs a 2-D tensor"):
        trainer.validate(module, datamodule=datamodule)
    extra = ("trainer.max_epochs=2", "test=false", "callbacks.grad_cam.layers=[layer4,fc]")
    with caplog.at_level(logging.WARNING, logger="caltech_cam.callbacks.grad_cam"):
        results, _ = run_train(tmp_path, synthetic_root, *extra, "callbacks.grad_cam.strict=false")
    warnings = [r for r in caplog.records if "GradCAMLogger failed" in r.getMessage()]
    assert len(warnings) == 1 and "layer 'fc' outputs a 2-D tensor" in warnings[0].getMessage()
    assert "val/acc_top1" in results["fit"]


def test_the_missing_logger_and_the_failure_warnings_are_independent(tmp_path, synthetic_root, caplog):
    datamodule, module = _built(tmp_path, synthetic_root)
    callback = GradCAMLogger(num_images=2, layers=["layer4", "fc"], strict=False)
    common = {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "limit_val_batches": 1,
        "callbacks": [callback],
    }
    with caplog.at_level(logging.WARNING, logger="caltech_cam.callbacks.grad_cam"):
        L.Trainer(logger=False, **common).validate(module, datamodule=datamodule)
        L.Trainer(logger=False, **common).validate(module, datamodule=datamodule)
        tensorboard = TensorBoardLogger(str(tmp_path / "tb"), name="", version="")
        L.Trainer(logger=tensorboard, **common).validate(module, datamodule=datamodule)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("the trainer has no logger" in m for m in messages) == 1
    failures = [m for m in messages if "GradCAMLogger failed" in m]
    assert len(failures) == 1 and "layer 'fc' outputs a 2-D tensor" in failures[0]


@pytest.mark.slow  # end to end: trains
def test_bf16_autocast(tmp_path, synthetic_root):
    _, out = run_train(
        tmp_path, synthetic_root, "trainer.max_epochs=1", "test=false", "trainer.precision=bf16-mixed"
    )
    (events,) = events_of(out / "tensorboard")
    assert len(events.Images("gradcam/overview")) == 1
    drops = [s.value for s in events.Scalars("gradcam/average_drop/layer4")]
    assert len(drops) == 1 and 0.0 <= drops[0] <= 100.0


@pytest.mark.slow  # end to end: trains
def test_inception_v3_stages(tmp_path, synthetic_root):
    _, out = run_train(tmp_path, synthetic_root, "trainer.max_epochs=1", "test=false", model="inception_v3")
    (events,) = events_of(out / "tensorboard")
    assert sorted(events.Tags()["images"]) == [
        "gradcam/Mixed_5d",
        "gradcam/Mixed_6e",
        "gradcam/Mixed_7c",
        "gradcam/overview",
    ]


class _Snapshots(L.Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.bn_training: list[bool] = []

    def _snap(self, pl_module) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    def on_train_start(self, trainer, pl_module) -> None:
        self._snap(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.bn_training.append(pl_module.model.bn1.training)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._snap(pl_module)


@pytest.mark.slow  # end to end: trains
def test_frozen_backbone_stays_fixed_then_thaws_with_the_callback_on(tmp_path, synthetic_root):

    from caltech_cam.run.build import build_datamodule, build_module

    cfg = compose_train([*tiny_overrides(synthetic_root, tmp_path), "model.freeze_backbone_epochs=1"])
    cfg.paths.output_dir = str(tmp_path / "f")
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    snapshots = _Snapshots()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=TensorBoardLogger(str(tmp_path / "f"), name="", version=""),
        callbacks=[GradCAMLogger(num_images=3, strict=True), snapshots],
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=datamodule)
    start, after_frozen, after_thawed = snapshots.states
    backbone = [k for k in start if not module.spec.is_head(k)]
    head = [k for k in start if module.spec.is_head(k)]
    assert all(torch.equal(start[k], after_frozen[k]) for k in backbone), (
        "backbone (weights and BN stats) frozen"
    )
    assert any(not torch.equal(start[k], after_frozen[k]) for k in head), "the head learns meanwhile"
    assert not torch.equal(after_frozen["layer1.0.conv1.weight"], after_thawed["layer1.0.conv1.weight"])
    assert not torch.equal(after_frozen["bn1.running_mean"], after_thawed["bn1.running_mean"])
    assert snapshots.bn_training == [False, True]
    assert len(events_of(tmp_path / "f")[0].Images("gradcam/overview")) == 2


@pytest.mark.slow
def test_two_process_ddp_only_rank_zero_computes_and_writes(tmp_path, synthetic_root):
    record = tmp_path / "record"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "caltech_cam.train",
            *tiny_overrides(synthetic_root, tmp_path),
            "trainer=ddp_cpu",
            "trainer.max_epochs=3",
            "test=false",
            "callbacks.grad_cam._target_=tests.helpers.recording.RecordingGradCAMLogger",
            f"+callbacks.grad_cam.record_dir={record}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    marks = sorted(p.name for p in record.iterdir())
    assert len(marks) == 3 and all(m.startswith("rank0-") for m in marks), marks
    (run,) = run_dirs(tmp_path)
    with_images = [e for e in events_of(run) if e.Tags()["images"]]
    assert len(with_images) == 1
    assert len(with_images[0].Images("gradcam/overview")) == 3


# ------------------------------------------------------------------------------------------------ localization
def test_subset_is_seeded_and_leaves_the_global_rng_alone():
    def subset(size, count, seed, default=None):
        return select_images(size, count, seed, default=default)[0].tolist()

    state = torch.get_rng_state()
    first = subset(100, 10, seed=3)
    torch.manual_seed(123)  # a different global state: the subset does not depend on it
    assert subset(100, 10, seed=3) == first
    torch.set_rng_state(state)
    expected = sorted(torch.randperm(100, generator=torch.Generator().manual_seed(3))[:10].tolist())
    assert first == expected and len(set(first)) == 10
    assert subset(100, 10, seed=4) != first
    assert subset(7, None, seed=0, default=64) == list(range(7))  # a default larger than the set: all of it
    before = torch.get_rng_state()
    subset(100, 10, seed=0)
    assert torch.equal(torch.get_rng_state(), before), "the global RNG advanced"
    with pytest.raises(ValueError, match="localization_images must be >= 1, got 0"):
        GradCAMLogger(localization_images=0)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        GradCAMLogger(chunk_size=0)
    with pytest.raises(ValueError, match=r"tolerance must be >= 0 pixels.*-1"):
        GradCAMLogger(tolerance=-1)


def _oracle(module, datamodule, indices: list[int], layers: list[str], chunk_size: int) -> dict[str, float]:
    """The localization scalars by hand: the library functions called directly on the subset."""
    from caltech_cam.cam import compute_cams
    from caltech_cam.cam.metrics.localization import (
        box_masks,
        default_tolerance,
        energy_pointing_game,
        map_boxes,
        pointing_game,
    )
    from caltech_cam.data.boxes import boxes_for

    dataset = datamodule.val_dataset
    images = torch.stack([dataset[i][0] for i in indices])
    labels = torch.tensor([dataset.labels[i] for i in indices])
    boxes, kept = map_boxes(boxes_for(datamodule.root, dataset.paths).subset(indices), module.preset)
    assert bool(kept.all()), "the oracle is given the scored images only"
    masks = box_masks(boxes, (images.shape[-2], images.shape[-1]))
    # In the callback's chunks: a layer1 map of a barely trained net is a near-cancelling sum whose min-max
    # scaling magnifies the float round-off of another batch size (seen: 7e-4 in the energy score).
    chunks = [
        compute_cams(module.model, part, layers, targets=target)
        for part, target in zip(images.split(chunk_size), labels.split(chunk_size), strict=True)
    ]
    maps = {layer: torch.cat([c[layer] for c in chunks]) for layer in layers}
    out = {}
    for layer in layers:
        out[f"gradcam/pointing_game/{layer}"] = float(
            pointing_game(maps[layer], masks, default_tolerance(images.shape[-1])).mean()
        )
        out[f"gradcam/energy_pointing_game/{layer}"] = float(energy_pointing_game(maps[layer], masks).mean())
    return out


class _Weights(L.Callback):
    """The module's weights at each validation end (after the GradCAMLogger listed before it)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


@pytest.mark.slow  # end to end: trains
def test_localization_scalars_equal_the_functions_on_the_seeded_subset(tmp_path, synthetic_root, caplog):
    datamodule, module = _built(tmp_path, synthetic_root)
    layers = ["layer1", "layer2", "layer3", "layer4"]
    callback = GradCAMLogger(num_images=2, localization_images=5, chunk_size=2, seed=1, strict=True)
    weights = _Weights()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=1,  # the weights change between the two validation ends: that is enough
        logger=TensorBoardLogger(str(tmp_path / "loc"), name="", version=""),
        callbacks=[callback, weights],
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    with caplog.at_level(logging.INFO, logger="caltech_cam.callbacks.grad_cam"):
        trainer.fit(module, datamodule=datamodule)
    dataset = datamodule.val_dataset
    drawn = select_images(len(dataset), 5, seed=1)[0].tolist()
    clutter = datamodule.num_classes - 1  # the synthetic clutter class has no boxes
    scored = [i for i in drawn if dataset.labels[i] != clutter]
    assert callback.located is not None and callback.located.indices == scored and scored
    assert callback.located.no_box == len(drawn) - len(scored) and callback.located.cut_off == 0
    notes = [r.getMessage() for r in caplog.records if "localization scalars on" in r.getMessage()]
    assert notes == [
        f"GradCAMLogger: localization scalars on {len(scored)} of 5 validation images (seed 1); excluded: "
        f"{len(drawn) - len(scored)} without a box, 0 whose box the crop cuts off."
    ]
    (events,) = events_of(tmp_path / "loc")
    assert len(weights.states) == 2
    for epoch, state in enumerate(weights.states):
        module.load_state_dict(state)
        for tag, value in _oracle(module, datamodule, scored, layers, chunk_size=2).items():
            logged = [s.value for s in events.Scalars(tag)]
            assert len(logged) == 2
            assert logged[epoch] == pytest.approx(value, abs=1e-6), (tag, epoch)


def _copy_without_boxes(root: Path, dst: Path, boxes: str | None = None) -> Path:
    import shutil

    shutil.copytree(root, dst, ignore=shutil.ignore_patterns("boxes.json", "synthetic.json"))
    if boxes is not None:
        (dst / "boxes.json").write_text(boxes)
    return dst


def _validate_twice(tmp_path: Path, root: Path, callback: GradCAMLogger, caplog) -> list[str]:
    from caltech_cam.run.build import build_datamodule, build_module

    cfg = compose_train([*tiny_overrides(root, tmp_path), "data.synthetic=null"])
    cfg.paths.output_dir = str(tmp_path / "v")
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    logger = TensorBoardLogger(str(tmp_path / "v"), name="", version="")
    with caplog.at_level(logging.INFO, logger="caltech_cam.callbacks.grad_cam"):
        for _ in range(2):
            trainer = L.Trainer(
                accelerator="cpu",
                logger=logger,
                callbacks=[callback],
                enable_progress_bar=False,
                limit_val_batches=1,
            )
            trainer.validate(module, datamodule=datamodule)
    return [r.getMessage() for r in caplog.records if r.name == "caltech_cam.callbacks.grad_cam"]


def test_without_boxes_one_note_and_no_localization_scalars(tmp_path, synthetic_root, caplog):
    root = _copy_without_boxes(synthetic_root, tmp_path / "plain")
    callback = GradCAMLogger(num_images=1, layers=["layer4"], strict=True)
    messages = _validate_twice(tmp_path, root, callback, caplog)
    notes = [m for m in messages if "has no boxes" in m]
    assert notes == [
        f"GradCAMLogger: the validation set has no boxes (none for data.root={root}); no localization scalars "
        "(gradcam/pointing_game, gradcam/energy_pointing_game)."
    ]
    events = events_of(tmp_path / "v")  # each validate closes its writer: one event file each
    assert not [t for e in events for t in e.Tags()["scalars"] if "pointing_game" in t]
    assert len(scalar_values(events, "gradcam/average_drop/layer4")) == 2, "the rest is logged as before"


def test_a_default_larger_than_the_split_uses_all_said_once(tmp_path, synthetic_root, caplog):
    callback = GradCAMLogger(num_images=1, layers=["layer4"], faithfulness=False, strict=True)
    messages = _validate_twice(tmp_path, synthetic_root, callback, caplog)
    assert callback.located is not None and callback.located.drawn == len(callback.located.indices) + (
        callback.located.no_box
    )
    size = callback.located.drawn
    assert size < 64, "the shared synthetic set's validation split is smaller than the default 64"
    assert [m for m in messages if "by default" in m] == [
        f"GradCAMLogger: localization scalars: 64 images by default, but the validation set has only {size}: "
        "all of them are used."
    ]
    values = scalar_values(events_of(tmp_path / "v"), "gradcam/energy_pointing_game/layer4")
    assert len(values) == 2 and values[0] == values[1] and 0.0 < values[0] < 1.0  # same weights, same subset


def test_an_explicit_count_larger_than_the_split_is_refused_in_setup(tmp_path, synthetic_root, caplog):
    callback = GradCAMLogger(num_images=1, localization_images=1000, layers=["layer4"], strict=False)
    with pytest.raises(
        ValueError, match=r"localization_images=1000 but the validation set has only \d+ images"
    ):
        _validate_twice(tmp_path, synthetic_root, callback, caplog)


def test_boxes_that_do_not_match_the_split_stop_the_run_in_setup(tmp_path, synthetic_root):
    root = _copy_without_boxes(
        synthetic_root, tmp_path / "other", boxes='{"999.nothing/x.jpg": [0, 0, 4, 4]}'
    )
    from caltech_cam.run.build import build_datamodule, build_module

    cfg = compose_train([*tiny_overrides(root, tmp_path), "data.synthetic=null"])
    cfg.paths.output_dir = str(tmp_path / "b")
    datamodule = build_datamodule(cfg.data)
    module = build_module(cfg, datamodule)
    steps = _Steps()
    trainer = _bare_trainer(GradCAMLogger(strict=False), steps)
    with pytest.raises(ValueError, match=r"boxes\.json .*999\.nothing/x\.jpg"):
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 0 and steps.started == 0


def test_the_uint8_cache_gives_the_callback_the_live_paths_pictures_and_numbers(tmp_path, synthetic_root):
    """data.cache=uint8: the datamodule's `finish_batch` turns the cached uint8 probe and subset into the live
    path's normalized input, so every picture and scalar is the same as without the cache."""
    from caltech_cam.run.build import build_datamodule, build_module

    written = {}
    if "cache" not in compose_train(tiny_overrides(synthetic_root, tmp_path)).data:
        pytest.skip("this datamodule has no uint8 cache (data.cache)")
    for name, extra in (("live", []), ("cached", ["data.cache=uint8"])):
        cfg = compose_train([*tiny_overrides(synthetic_root, tmp_path), *extra])
        cfg.paths.output_dir = str(tmp_path / name)
        datamodule = build_datamodule(cfg.data)
        torch.manual_seed(0)
        module = build_module(cfg, datamodule)
        trainer = L.Trainer(
            accelerator="cpu",
            logger=TensorBoardLogger(str(tmp_path / name), name="", version=""),
            callbacks=[GradCAMLogger(num_images=3, localization_images=4, strict=True)],
            enable_progress_bar=False,
            limit_val_batches=1,
        )
        trainer.validate(module, datamodule=datamodule)
        if extra:
            assert datamodule.val_dataset[0][0].dtype == torch.uint8, "the callback read cached uint8 images"
        (events,) = events_of(tmp_path / name)
        tags = events.Tags()
        written[name] = (
            {tag: events.Images(tag)[0].encoded_image_string for tag in tags["images"]},
            {tag: events.Scalars(tag)[0].value for tag in tags["scalars"] if tag.startswith("gradcam/")},
        )
    assert any("pointing_game" in tag for tag in written["live"][1])
    assert written["cached"] == written["live"]
