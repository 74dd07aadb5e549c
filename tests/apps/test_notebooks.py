"""Every notebook in notebooks/ runs top to bottom (nbclient, a real kernel) on a checkpoint trained here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import compose_train, require, tiny_overrides

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_to_run():
    assert [p.name for p in NOTEBOOKS] == ["evaluation.ipynb", "explain_layers.ipynb"], (
        "new notebook? it runs below; update this list"
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    """One epoch of ResNet50 at 64 px on the shared synthetic set, by `train` itself (run dir, manifest, last.ckpt)."""
    from caltech_cam.train import train

    tmp = tmp_path_factory.mktemp("notebook_run")
    extra = ["trainer.max_epochs=1", "test=false", "logger=none", "callbacks.grad_cam.enabled=false"]
    cfg = compose_train([*tiny_overrides(synthetic_root, tmp), *extra])
    cfg.paths.output_dir = str(tmp / "run")
    results = train(cfg)
    return Path(results["last_checkpoint"])


def table(text: str, header: str) -> dict[str, list[float]]:
    """The rows (first word -> numbers) printed under the line that ends with `header`, up to the first non-row."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith(header)) + 1
    rows = {}
    for line in lines[start:]:
        words = line.split()
        try:
            rows[words[0]] = [float(w) for w in words[1:]]
        except (ValueError, IndexError):
            break
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, checkpoint, synthetic_root, monkeypatch):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    require("ipykernel")
    # The kernel inherits this environment: the notebook's first cell reads these, PYTHONPATH finds this code.
    monkeypatch.setenv("CALTECH_CAM_CKPT", str(checkpoint))
    monkeypatch.setenv("CALTECH_CAM_DATA", str(synthetic_root))
    monkeypatch.setenv("CALTECH_CAM_IMAGES", "4")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # a failing cell raises CellExecutionError with its traceback
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert f"checkpoint: {checkpoint}" in text, "the notebook used the checkpoint it was given"
    layers = ("layer1", "layer2", "layer3", "layer4")
    if path.name == "evaluation.ipynb":
        pictures = [out for out in outputs if "image/png" in out.get("data", {})]
        assert len(pictures) == 3, "deletion/insertion, ROAD and sanity-check figures"
        assert "4 images, layers layer1, layer2, layer3, layer4" in text
        auc, road = table(text, "deletion AUC  insertion AUC"), table(text, "MoRF   LeRF   ROAD")
        assert list(auc) == list(road) == list(layers)
        for layer in layers:
            assert all(0.0 <= v <= 1.0 for v in auc[layer]), "areas under probabilities over [0, 1]"
            morf, lerf, score = road[layer]
            assert score == pytest.approx((lerf - morf) / 2, abs=1.5e-3), "ROAD = (LeRF - MoRF) / 2"
        verdicts = [line.split()[0] for line in text.splitlines() if line.endswith((": passes", ": FLAGGED"))]
        assert verdicts == list(layers), "one sanity verdict per layer"
    if path.name == "explain_layers.ipynb":
        pictures = [out for out in outputs if "image/png" in out.get("data", {})]
        assert len(pictures) == 2, "the stage grid and the method grid"
        assert text.count(" true ") == 4, "one top-3 line per image"
        scores = [out["data"]["text/plain"] for out in outputs if out.output_type == "execute_result"][-1]
        assert all(f"'{layer}'" in scores for layer in layers)
