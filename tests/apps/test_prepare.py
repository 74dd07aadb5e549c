"""`python -m caltech_cam.prepare` as a user runs it: exit codes, the manifest, the printed summary."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _prepare(
    tmp_path: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    tmp_path.mkdir(exist_ok=True)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "caltech_cam.prepare",
            f"paths.root_dir={tmp_path}",
            f"paths.data_dir={tmp_path}/data",
            *overrides,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _run_dir(tmp_path: Path) -> Path:
    (run,) = (tmp_path / "outputs" / "prepare" / "runs").iterdir()
    return run


def test_prepare_generates_the_synthetic_set_and_writes_the_manifest(tmp_path):
    proc = _prepare(
        tmp_path,
        "data.synthetic.num_classes=3",
        "data.synthetic.images_per_class=20",
        "data.synthetic.max_size=80",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "data" / "synthetic" / "003.clutter" / "003_0020.jpg").is_file()
    # 20 per class at 0.7/0.15/0.15 is exactly 14/3/3.
    assert "classes: 3  images: 60  train: 42  val: 9  test: 9  (split: fractions)" in proc.stdout
    with (_run_dir(tmp_path) / "split_manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert Counter((r["label"], r["split"]) for r in rows) == {
        (str(k), s): n for k in range(3) for s, n in (("train", 14), ("val", 3), ("test", 3))
    }
    assert all(len(r["sha1"]) == 40 for r in rows)
    assert "near-duplicate groups (perceptual hash within 17 bits, 0 pair(s); each kept in one split): 0" in (
        proc.stdout
    )
    summary = json.loads((_run_dir(tmp_path) / "data_summary.json").read_text())
    assert summary["near_duplicates"] == {"enabled": True, "max_distance": 17, "pairs": 0}
    assert summary["class_names"] == ["red-circle", "green-triangle", "clutter"]
    assert (tmp_path / "data" / "cache").is_dir()


def test_a_bad_image_fails_the_run_by_name_and_skip_reports_it(caltech_tree, tmp_path):
    root = f"data.root={caltech_tree.root}"
    failed = _prepare(tmp_path / "error", "data=caltech256", root)
    assert failed.returncode != 0
    assert "056.dog/056_0009.jpg" in failed.stderr
    assert "truncated" in failed.stderr
    assert not list((tmp_path / "error" / "outputs" / "prepare" / "runs").glob("*/split_manifest.csv"))

    skipped = _prepare(tmp_path / "skip", "data=caltech256", root, "data.bad_images=skip")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "bad images (dropped): 2" in skipped.stdout
    assert "056.dog/056_0009.jpg: decode_jpeg: Image is incomplete or truncated" in skipped.stdout
    assert "257.clutter/257_0007.jpg: empty file (0 bytes)" in skipped.stdout
    assert "198.spider/RENAME2: not an image file" in skipped.stdout
    assert "198.spider/198_0001.jpg = 198.spider/198_0008.jpg" in skipped.stdout
    rows = (_run_dir(tmp_path / "skip") / "split_manifest.csv").read_text().splitlines()
    assert len(rows) == 1 + 32


def test_an_invalid_near_duplicate_threshold_stops_before_any_work_naming_the_key(tmp_path):
    proc = _prepare(tmp_path, "data.near_duplicates.max_distance=193")
    assert proc.returncode != 0
    assert (
        "data.near_duplicates.max_distance must be an integer number of bits in [0, 192], got 193"
        in proc.stderr
    )
    assert not (tmp_path / "data" / "synthetic").exists()  # refused before generating anything


def test_a_caltech_folder_under_the_default_synthetic_data_suggests_data_caltech256(caltech_tree, tmp_path):
    for root in (caltech_tree.root, caltech_tree.folder):
        proc = _prepare(tmp_path, f"data.root={root}")
        assert proc.returncode != 0
        assert "holds Caltech-layout class folders" in proc.stderr
        assert "4 NNN.name folders, e.g. 001.ak47, 056.dog, 198.spider" in proc.stderr
        assert f"pass data=caltech256 data.root={root}" in proc.stderr
        assert (caltech_tree.folder / "001.ak47" / "001_0001.jpg").is_file()  # nothing touched


def test_download_without_a_network_explains_itself(tmp_path):
    # Every HTTP(S) request goes through a proxy on a closed local port: refused at once, on any machine.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"no_proxy", "http_proxy", "https_proxy"}}
    env |= {"https_proxy": proxy, "http_proxy": proxy, "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy}
    root = tmp_path / "caltech"
    proc = _prepare(tmp_path, "data=caltech256", f"data.root={root}", "data.download=true", env=env)
    assert proc.returncode != 0
    assert "DownloadError: data.download=true could not fetch Caltech-256 from https://data.caltech.edu/" in (
        proc.stderr
    )
    assert "Connection refused" in proc.stderr
    assert f"put it at {root / 'caltech256' / '256_ObjectCategories.tar'}" in proc.stderr
    assert (
        "URLError" in proc.stderr.splitlines()[-4] or "by hand from https://data.caltech.edu" in proc.stderr
    )
