"""Pretrained weights when several ranks start at once: rank 0 of a node fetches, the others wait for its file or
its failure; `prepare weights=[...]` fills the hub cache beforehand for offline compute nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from caltech_cam.models.weights import RESNET50_WEIGHTS, hub_cache_path

FETCH = (
    "import logging\n"
    "logging.basicConfig(level=logging.INFO)\n"
    "import torch\n"
    "from caltech_cam.models.weights import RESNET50_WEIGHTS, fetch_state_dict\n"
    "state = fetch_state_dict(RESNET50_WEIGHTS, progress=False)\n"
    "print('SUM', float(sum(v.double().sum() for v in state.values())))\n"
)
# No network here or in CI; a proxy on a closed local port makes the download fail at once on any machine.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def _env(torch_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "SLURM_LOCALID")}
    return {**env, **OFFLINE, "TORCH_HOME": str(torch_home), **extra}


def _rank(torch_home: Path, rank: int, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", FETCH],
        env=_env(torch_home, LOCAL_RANK=str(rank), **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cache_file(torch_home: Path) -> Path:
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        return hub_cache_path(RESNET50_WEIGHTS)
    finally:
        os.environ.pop("TORCH_HOME") if old is None else os.environ.__setitem__("TORCH_HOME", old)


@pytest.mark.slow
def test_a_waiting_rank_reads_the_file_its_rank_zero_puts_in_the_cache(tmp_path):
    cached = _cache_file(tmp_path)
    cached.parent.mkdir(parents=True)
    # A failure left a minute ago by another launch (another SLURM job sharing TORCH_HOME): not this launch's answer.
    (cached.parent / (cached.name + ".caltech_cam-failed")).write_text("slurm:999.0\nno network in that job")
    waiting = _rank(tmp_path, 1)
    deadline = time.monotonic() + 120
    seen = ""
    while "waits for local rank 0" not in seen:  # the rank is in its waiting loop, not past it
        assert waiting.poll() is None and time.monotonic() < deadline, seen + waiting.stderr.read()
        seen += waiting.stderr.readline()
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([0.5])}
    torch.save(state, cached.with_suffix(".partial"))
    cached.with_suffix(".partial").rename(cached)  # as torch.hub does: written aside, then moved into place
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, (seen + err)[-3000:]
    assert "SUM 15.5" in out  # 0+1+...+5 + 0.5: the very tensors rank 0 cached


@pytest.mark.slow
def test_a_waiting_rank_stops_when_its_rank_zero_cannot_fetch(tmp_path):
    waiting = _rank(tmp_path, 1)
    first = _rank(tmp_path, 0)
    _, err0 = first.communicate(timeout=120)
    _, err1 = waiting.communicate(timeout=120)
    assert (
        first.returncode != 0
        and "downloading https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in err0
    )
    assert waiting.returncode != 0
    assert "local rank 0 could not fetch the weights this rank needs" in err1
    assert "resnet50-11ad3fa6.pth" in err1


@pytest.mark.slow
def test_a_waiting_rank_gives_up_after_the_configured_time_naming_the_file(tmp_path):
    waiting = _rank(tmp_path, 1, CALTECH_CAM_WEIGHTS_WAIT_S="1")
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode != 0
    assert f"{_cache_file(tmp_path)} is not in the torch hub cache" in err
    assert "did not fetch it within 1 s" in err and "model.weights_path=" in err


@pytest.mark.slow
def test_prepare_prefetches_weights_and_names_missing_files(tmp_path):
    cached = _cache_file(tmp_path)
    cached.parent.mkdir(parents=True)
    torch.save({"w": torch.ones(3)}, cached)
    run = [sys.executable, "-m", "caltech_cam.prepare", "~data", f"paths.root_dir={tmp_path}"]
    ok = subprocess.run(
        [*run, "weights=[resnet50]"], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert f"resnet50: ResNet50_Weights.IMAGENET1K_V2 in {cached}" in ok.stdout
    # my_inception_v3 starts from inception_v3's file (the tensors that correspond by role): offline, it is named.
    mine = subprocess.run(
        [*run, "weights=[my_inception_v3]"], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert (
        mine.returncode != 0
        and "inception_v3_google-0cc3c7bd.pth is not in the torch hub cache" in mine.stderr
    )
    offline = subprocess.run(
        [*run, "weights=[inception_v3]"], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert (
        offline.returncode != 0
        and "inception_v3_google-0cc3c7bd.pth is not in the torch hub cache" in offline.stderr
    )
