"""The demo trained by a release's code and by this checkout's, side by side: the same metrics with the same seed.

    python benchmarks/demo_against_release.py [--release 9298e6b] [overrides ...]   # 9298e6b is 0.2.0 (tag v0.2.0)

Extracts `git archive <release> src conf` into a temporary folder, runs `python -m caltech_cam.train experiment=demo`
once with `PYTHONPATH` at the release's code and once with this checkout's (each from an empty data folder, one
after the other), and prints every numeric entry of both `metrics.json` with their difference and wall times.
Exits non-zero when a metric differs by more than --tolerance (default 0: the same numbers to the last digit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def flat(metrics: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def run(code: Path, work: Path, overrides: list[str]) -> tuple[dict[str, float], float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    args = [sys.executable, "-m", "caltech_cam.train", "experiment=demo", f"paths.root_dir={work}"]
    args += [f"hydra.run.dir={work / 'run'}", "callbacks.progress_bar.enabled=false", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"train with {code} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return flat(json.loads((work / "run" / "metrics.json").read_text())), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="9298e6b", help="a commit or tag (default: 0.2.0, tag v0.2.0)")
    parser.add_argument("--tolerance", type=float, default=0.0)
    parser.add_argument("overrides", nargs="*")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "code"
        old.mkdir()
        archive = subprocess.run(
            ["git", "archive", options.release, "src", "conf"], cwd=REPO, capture_output=True
        )
        if archive.returncode:
            sys.exit(f"git archive {options.release} failed: {archive.stderr.decode()}")
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        results = {}
        for name, code in (("release", old / "src"), ("this", REPO / "src")):
            work = Path(tmp) / name
            work.mkdir()
            results[name] = run(code, work, options.overrides)
    (before, t_before), (after, t_after) = results["release"], results["this"]
    keys = sorted(k for k in set(before) | set(after) if not k.startswith("data."))
    width = max(len(k) for k in keys)
    print(f"{'metric':<{width}}  {options.release:>12}  {'this':>12}  difference")
    worst = 0.0
    for key in keys:
        a, b = before.get(key), after.get(key)
        diff = abs(a - b) if a is not None and b is not None else float("inf")
        if not key.startswith("optimized_value") and "timing/" not in key:
            worst = max(worst, diff)
        print(
            f"{key:<{width}}  {a if a is not None else '-':>12}  {b if b is not None else '-':>12}  {diff:.3g}"
        )
    print(f"wall time: {options.release} {t_before:.1f} s, this {t_after:.1f} s ({t_after / t_before:.2f}x)")
    print(f"largest difference (timing/* left out): {worst:.3g}")
    sys.exit(0 if worst <= options.tolerance else 1)


if __name__ == "__main__":
    main()
