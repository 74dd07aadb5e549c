"""The data contract under Lightning's own `ddp` launcher: every rank re-runs the script, as `trainer=ddp` does.

Each rank sizes its model from the cheap class index before a Trainer exists; the Trainer then calls
prepare_data on rank 0 alone (which generates the synthetic set, decode-checks it and builds the uint8 cache) and
setup on both ranks, which map the one cache file and finish their batches on the device.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path

    import lightning as L
    import torch
    from torch import nn

    from caltech_cam.data import CaltechDataModule
    from caltech_cam.data import check as check_module

    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    decodes = []
    real = check_module.check_file
    check_module.check_file = lambda path, *a, **k: decodes.append(path) or real(path, *a, **k)

    dm = CaltechDataModule(
        root=root / "synthetic", resize=32, batch_size=4, seed=7, output_dir=out, cache_dir=root / "cache",
        synthetic={"num_classes": 3, "images_per_class": 8, "min_size": 40, "max_size": 48}, cache="uint8",
    )
    existed = (root / "synthetic").exists()
    names = dm.class_names  # before any Trainer: the cheap index


    seen = []


    class Tiny(L.LightningModule):
        def __init__(self, num_classes):
            super().__init__()
            self.head = nn.Linear(3, num_classes)

        def training_step(self, batch, _):
            x, y = batch
            seen.append([str(x.dtype), list(x.shape[1:])])
            return nn.functional.cross_entropy(self.head(x.mean((2, 3))), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)


    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Tiny(len(names)), datamodule=dm)
    rows = "".join(f"{r.path},{r.label},{r.split},{r.sha1};" for r in dm.split_rows)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({
        "existed_before_fit": existed,
        "class_names_before_trainer": names,
        "decodes": len(decodes),
        "rows": hashlib.sha1(rows.encode()).hexdigest(),
        "train": len(dm.train_dataset),
        "cache": dm.summary()["cache"],
        "batches": seen,
    }))
    # Leave as a well-behaved DDP script does: a gloo group still alive at interpreter exit can abort the process
    # ("terminate called without an active exception") after all the work is done.
    torch.distributed.destroy_process_group()
    """
)


def test_two_ranks_prepare_once_and_split_alike(tmp_path: Path) -> None:
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["existed_before_fit"] is False  # nobody generated while reading the class names
        assert rank["class_names_before_trainer"] == ["red-circle", "green-triangle", "clutter"]
    assert [r["decodes"] for r in ranks] == [24, 0]  # rank 0's prepare_data checks 3 x 8 files; rank 1 reads
    assert ranks[0]["rows"] == ranks[1]["rows"]
    assert ranks[0]["train"] == ranks[1]["train"] == 3 * 6  # 8 per class at 0.7/0.15/0.15: 6/1/1
    # One cache file, built by rank 0 and mapped by both; batches reach the model finished (float, 3 x 32 x 32).
    assert ranks[0]["cache"] == ranks[1]["cache"] and len(list((tmp_path / "cache").rglob("*.bin"))) == 1
    for rank in ranks:
        assert rank["batches"] and all(b == ["torch.float32", [3, 32, 32]] for b in rank["batches"])
    manifest = (out / "split_manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 24
    assert sorted(p.name for p in out.iterdir()) == ["rank0.json", "rank1.json", "split_manifest.csv"]
