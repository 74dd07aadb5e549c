"""model.compile=true: the compiled forward gives eager's logits and training step, checkpoints and CAMs unchanged.

Compiling is slow on CPU (inductor: minutes for ResNet50 on 2 cores), so these tests compile with the `aot_eager`
backend: the same Dynamo capture and AOTAutograd graphs as inductor, without its code generation.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader, TensorDataset

from caltech_cam.cam import Explainer
from caltech_cam.models import ClassifierModule, load_classifier
from tests.helpers import compose_train, tiny_overrides

CLASSES = ["a", "b", "c", "d"]
PRESET = {"name": "resnet", "resize": 64, "crop": None}
BACKEND = "aot_eager"


def small(compile: bool) -> ClassifierModule:
    torch.manual_seed(0)  # the same initial weights either way
    return ClassifierModule(
        "resnet50",
        len(CLASSES),
        CLASSES,
        preset=PRESET,
        compile=compile,
        compile_backend=BACKEND,
        scheduler={},
    )


def fit_one_step(module: ClassifierModule, inputs: torch.Tensor, labels: torch.Tensor, path: Path) -> Path:
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(TensorDataset(inputs, labels), batch_size=len(inputs)))
    trainer.save_checkpoint(path)
    return path


@pytest.mark.slow  # one compiled training step and one compiled evaluation forward (~20 s)
def test_compiled_module_matches_eager_and_keeps_names_keys_and_hooks(tmp_path, one_thread):
    torch.manual_seed(1)
    inputs, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    eager, compiled = small(compile=False), small(compile=True)
    # The handle is no submodule: names and keys are eager's, without `_orig_mod.`.
    assert compiled.network is not compiled.model and compiled.network._orig_mod is compiled.model
    assert [n for n, _ in compiled.named_modules()] == [n for n, _ in eager.named_modules()]
    assert list(compiled.state_dict()) == list(eager.state_dict())

    # One training step each, from the same weights on the same batch: the same weights after it.
    ckpt_eager = torch.load(fit_one_step(eager, inputs, labels, tmp_path / "eager.ckpt"), weights_only=True)
    ckpt_compiled = torch.load(
        fit_one_step(compiled, inputs, labels, tmp_path / "compiled.ckpt"), weights_only=True
    )
    assert compiled._compiled._compiled is not None, "the step ran through the compiled handle"
    # Copies (deepcopy, ddp_spawn's pickling) leave compiled code behind and build their own handle on first use.
    clone = copy.deepcopy(compiled)
    assert clone._compiled._compiled is None and clone.network._orig_mod is clone.model
    assert list(ckpt_compiled["state_dict"]) == list(ckpt_eager["state_dict"])
    initial = small(compile=False).state_dict()
    moved = 0
    for key, value in ckpt_eager["state_dict"].items():
        torch.testing.assert_close(ckpt_compiled["state_dict"][key], value, atol=1e-5, rtol=1e-4, msg=key)
        moved += int(value.is_floating_point() and not torch.equal(value, initial[key]))
    assert moved > 100, "the step changed the weights"

    # Evaluation logits of the compiled forward equal the eager module's on the same weights.
    compiled.eval()
    with torch.no_grad():
        logits = compiled.model(inputs)
        assert torch.isfinite(logits).all()
        torch.testing.assert_close(compiled(inputs), logits, atol=1e-4, rtol=1e-4)

    # The CAM engine hooks `.model` and runs it eagerly: no new graph, no graph break.
    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    assert graphs > 0, "Dynamo counted the graphs it compiled"
    maps_compiled = Explainer.of(compiled).explain(inputs).maps
    assert counters["stats"]["unique_graphs"] == graphs and sum(counters["graph_break"].values()) == breaks
    eager.load_state_dict(compiled.state_dict())
    maps_eager = Explainer.of(eager.eval()).explain(inputs).maps
    for layer, values in maps_eager.items():
        torch.testing.assert_close(maps_compiled[layer], values, msg=layer)

    # The checkpoint loads into a module without compile; `load_classifier` (evaluate, explain) runs it eagerly.
    assert ckpt_compiled["hyper_parameters"]["compile"] is True
    plain = ClassifierModule("resnet50", len(CLASSES), CLASSES, preset=PRESET, scheduler={})
    plain.load_state_dict(ckpt_compiled["state_dict"])
    loaded = load_classifier(tmp_path / "compiled.ckpt")
    assert loaded.hparams.compile is False and loaded.network is loaded.model
    torch.testing.assert_close(Explainer.of(loaded).explain(inputs).maps, maps_compiled)


def test_bad_compile_options_are_refused_by_name():
    with pytest.raises(ValueError, match=r"compile_mode='fast'.*max-autotune"):
        ClassifierModule("resnet50", 4, preset=PRESET, compile=True, compile_mode="fast")
    with pytest.raises(ValueError, match=r"compile_backend='nope'.*inductor"):
        ClassifierModule("resnet50", 4, preset=PRESET, compile=True, compile_backend="nope")


def gradcam_pictures(tmp_path: Path, root: Path, compile: bool) -> dict[str, np.ndarray]:
    """A tiny real fit through `train` with the GradCAMLogger; its gradcam/* images read back from TensorBoard."""
    from caltech_cam.train import train

    cfg = compose_train(
        [
            *tiny_overrides(root, tmp_path),
            "trainer.max_epochs=1",
            "test=false",
            f"model.compile={str(compile).lower()}",
            f"model.compile_backend={BACKEND}",
            "callbacks.grad_cam.faithfulness=false",
        ]
    )
    cfg.paths.output_dir = str(tmp_path / f"compile-{compile}")
    train(cfg)
    (file,) = (Path(cfg.paths.output_dir) / "tensorboard").rglob("events.out.tfevents.*")
    events = EventAccumulator(str(file), size_guidance={"images": 0})
    events.Reload()
    return {
        tag: np.asarray(Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string)), dtype=np.float64)
        for tag in events.Tags()["images"]
    }


@pytest.mark.slow  # two tiny fits, one compiled (~40 s)
def test_gradcam_pictures_with_compile_equal_those_without(tmp_path, synthetic_root, one_thread):
    compiled = gradcam_pictures(tmp_path, synthetic_root, compile=True)
    eager = gradcam_pictures(tmp_path, synthetic_root, compile=False)
    layers = ["layer1", "layer2", "layer3", "layer4"]
    assert (
        sorted(compiled)
        == sorted(eager)
        == sorted([f"gradcam/{layer}" for layer in layers] + ["gradcam/overview"])
    )
    for tag, picture in eager.items():
        assert compiled[tag].shape == picture.shape, tag
        # The two runs' weights differ by float rounding only: the overlays agree to a few grey levels.
        difference = np.abs(compiled[tag] - picture)
        assert difference.mean() < 1.0 and np.quantile(difference, 0.99) < 8, (tag, difference.mean())
