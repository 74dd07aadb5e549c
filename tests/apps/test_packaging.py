"""A plain (non-editable) install finds its Hydra configs from any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_plain_install_ships_the_configs(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(REPO)],
        check=True,
        timeout=600,
    )
    assert (target / "caltech_cam" / "conf" / "train.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = tmp_path / "elsewhere"
    where.mkdir()
    located = subprocess.run(
        [sys.executable, "-c", "import caltech_cam.run.config as c; print(c.config_dir())"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(located.stdout.strip()) == target / "caltech_cam" / "conf"
    composed = subprocess.run(
        [sys.executable, "-m", "caltech_cam.train", "model=inception_v3", "--cfg", "job"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert composed.returncode == 0, composed.stderr[-3000:]
    assert "model_name: inception_v3" in composed.stdout and "preset: inception" in composed.stdout
