"""benchmarks/gpu_check.sh: valid bash, refuses bad use, and its CPU dry run runs every step to one summary."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(*args: str, env: dict[str, str] | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_script_parses_and_refuses_bad_use(tmp_path):
    syntax = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    bad = run("--fast")
    assert bad.returncode == 2 and "usage" in bad.stderr and "--fast" in bad.stderr
    taken = tmp_path / "old"
    taken.mkdir()
    refused = run("--dry-run", env={"GPU_CHECK_DIR": str(taken)})
    assert refused.returncode == 2 and f"GPU_CHECK_DIR={taken} exists" in refused.stderr
    assert list(taken.iterdir()) == [], "nothing written into a folder that was refused"


@pytest.mark.slow  # every step of the check on CPU at tiny sizes (~3 min on 2 busy cores)
def test_dry_run_runs_every_step_and_prints_one_summary(tmp_path):
    folder = tmp_path / "check"
    proc = run("--dry-run", env={"GPU_CHECK_DIR": str(folder)}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = (folder / "summary.txt").read_text()
    assert summary in proc.stdout
    has_cache = (folder / "runs" / "demo_cached").is_dir()
    runs = ["demo_decode", "large_decode"] + (
        ["demo_cached", "large_cached", "large_cached_compiled"] if has_cache else ["large_decode_compiled"]
    )
    if not has_cache:
        assert "SKIP the cached runs" in proc.stdout
    for name in runs:
        row = re.search(rf"^{name}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", summary, re.M)
        assert row, f"no numbers for {name} in:\n{summary}"
        images_per_s, fraction, accuracy, wall = map(float, row.groups())
        assert images_per_s > 0 and 0 <= fraction <= 1 and 0 <= accuracy <= 1
        assert wall == float((folder / "steps" / f"{name}.seconds").read_text())
    # The CAM ratios come from bench_cam; bench_data's lines when the script is in this checkout.
    assert re.search(r"caltech_cam / pytorch-grad-cam = [\d.]+", summary)
    if (SCRIPT.parent / "bench_data.py").is_file():
        assert "per core" in summary and "model resnet50" in summary
    else:
        assert "SKIP bench_data" in proc.stdout
    assert "failed steps: none" in summary
    written = {p.name for p in folder.iterdir()}
    assert {"log.txt", "summary.txt", "runs", "steps", "data"} <= written


@pytest.mark.slow  # a few Python start-ups (~30 s)
def test_a_spent_time_budget_skips_every_step_and_says_so(tmp_path):
    folder = tmp_path / "check"
    proc = run("--dry-run", env={"GPU_CHECK_DIR": str(folder), "GPU_CHECK_BUDGET": "0"}, timeout=300)
    assert proc.returncode == 1, "an incomplete check is not a pass"
    skipped = re.findall(r"SKIP step (\w+): -?\d+ s of the 0 s budget left", proc.stdout)
    assert skipped[:2] == ["demo_decode", "large_decode"] or skipped[:2] == ["demo_decode", "demo_cached"]
    assert not (folder / "runs").exists(), "no run started"
    assert "failed steps: demo_decode (no time left)" in (folder / "summary.txt").read_text()
