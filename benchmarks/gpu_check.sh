#!/usr/bin/env bash
# The GPU check of issue 12, in one go (< 8 minutes on one H200): is training fed, and what do the switches buy?
#
#   bash benchmarks/gpu_check.sh              # one CUDA GPU: trainer=gpu (bf16-mixed, channels_last, GradCAMLogger on)
#   bash benchmarks/gpu_check.sh --dry-run    # the same steps on the CPU at tiny sizes (checks the script, ~4 min)
#
# Steps, most important first, each a real run from this checkout (src/ first on PYTHONPATH), each capped by
# `timeout` and all of them by one time budget (GPU_CHECK_BUDGET seconds, 430 on a GPU: the check ends within 8
# minutes; a step the budget no longer allows is skipped with a line saying so):
#   1. train experiment=demo trainer=gpu                           (64 px, decode path; 2 epochs)
#   2. the same with data.cache=uint8                              (uint8 cache + augmentation on the device)
#   3. the same at the study's 256 px: decode path, cached, cached + model.compile=true
#   4. benchmarks/bench_cam.py on the device (four stage maps: ours vs pytorch-grad-cam, captum and the floor)
#   5. benchmarks/bench_data.py on the device (decode vs cached loaders against each backbone's training step)
# then prints one summary: images/s and data-bound fraction per run (the StepTimer's timing/* scalars of the last
# epoch, read from the runs' TensorBoard files), bench_data's ratios and the CAM ratios. A step whose key or script
# is not in this checkout yet (data.cache, bench_data.py) is skipped with a line saying so.
#
# Everything is written under one fresh folder (GPU_CHECK_DIR if given, which must not exist; else a new mktemp
# folder): runs, data, the uint8 cache, compiler caches, log.txt and summary.txt. Nothing else on the machine is
# touched. Needs the project's packages (pip install -e ".[bench]"; bench_cam also needs grad-cam and captum).
# --dry-run compiles with the aot_eager backend: inductor needs minutes per ResNet50 graph on a small CPU.
set -euo pipefail

DRY_RUN=0
case "${1:-}" in
"") ;;
--dry-run) DRY_RUN=1 ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh [--dry-run]  (got: $*)" >&2
    exit 2
    ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
if [[ -n "${GPU_CHECK_DIR:-}" ]]; then
    if [[ -e "$GPU_CHECK_DIR" ]]; then
        echo "GPU_CHECK_DIR=$GPU_CHECK_DIR exists; give a folder that does not, so no earlier result is mixed in." >&2
        exit 2
    fi
    mkdir -p "$GPU_CHECK_DIR"
    WORK=$(cd "$GPU_CHECK_DIR" && pwd)
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
fi
LOG="$WORK/log.txt"
START=$SECONDS
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# Compiler and library caches inside the check's folder: the machine's own caches stay as they were.
export TORCHINDUCTOR_CACHE_DIR="$WORK/cache/inductor" TRITON_CACHE_DIR="$WORK/cache/triton"
export XDG_CACHE_HOME="$WORK/cache/xdg" MPLCONFIGDIR="$WORK/cache/matplotlib" TORCH_HOME="$WORK/cache/torch"
export CALTECH_CAM_DATA_DIR="$WORK/data"
unset CALTECH256_ROOT CALTECH_CAM_ROOT

say() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME SECONDS COMMAND...: runs it with its output in log.txt and steps/NAME.txt; a failure or timeout is
# reported and the check goes on (the summary names it), so one broken step does not hide the others.
FAILED=()
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 30)); then
        say "SKIP step $name: ${left} s of the ${BUDGET} s budget left"
        FAILED+=("$name (no time left)")
        return
    fi
    if ((limit > left)); then limit=$left; fi
    say "step $name (at most ${limit} s): $*"
    mkdir -p "$WORK/steps"
    local status=0 began=$SECONDS
    timeout --kill-after=20 "$limit" "$@" >"$WORK/steps/$name.txt" 2>&1 || status=$?
    echo $((SECONDS - began)) >"$WORK/steps/$name.seconds"
    cat "$WORK/steps/$name.txt" >>"$LOG"
    if ((status == 124 || status == 137)); then
        say "step $name TIMED OUT after ${limit} s"
        FAILED+=("$name (timed out)")
    elif ((status != 0)); then
        say "step $name FAILED (exit $status); its last lines:"
        tail -n 15 "$WORK/steps/$name.txt" | tee -a "$LOG"
        FAILED+=("$name (exit $status)")
    fi
}

cd "$WORK"
say "folder $WORK; repo $REPO; python $($PY -c 'import sys; print(sys.executable)')"
missing=$($PY - <<'EOF'
import importlib.util
need = ["torch", "torchvision", "lightning", "hydra", "omegaconf", "tensorboard", "caltech_cam"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [[ -n "$missing" ]]; then
    say "missing Python packages: $missing (pip install -e \".[bench]\" in $REPO); nothing was run"
    exit 1
fi
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee -a "$LOG"
if ((!DRY_RUN)); then
    if ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        say "no CUDA device visible to torch; run with --dry-run for the CPU check"
        exit 1
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG" || true
fi

# ------------------------------------------------------------------------------------------------ settings
HAS_CACHE=$($PY -c 'import inspect; from caltech_cam.data import CaltechDataModule as D
print(int("cache" in inspect.signature(D).parameters))')
if ((DRY_RUN)); then
    # 4 classes x 12 images, 1 epoch, no workers, 64 px everywhere, 1 thread: checks every step, measures nothing.
    export OMP_NUM_THREADS=1
    COMMON=(trainer=cpu trainer.max_epochs=1 data.num_workers=0 data.batch_size=8
        data.synthetic.num_classes=4 data.synthetic.images_per_class=12
        callbacks.grad_cam.num_images=4 model.compile_backend=aot_eager)
    LARGE=(data.resize=64 data.crop=null)
    FIRST_LIMIT=300 TRAIN_LIMIT=300 COMPILE_LIMIT=300
    BUDGET=${GPU_CHECK_BUDGET:-1200}
    BENCH_DATA=(--images 48 --resize 64 --presets resnet --workers 1 --per-core-images 24 --batch 8
        --models resnet50 --model-steps 1 --device cpu --threads 1)
    BENCH_CAM=(--device cpu --batch 2 --size 64 --repeats 1 --threads 1)
else
    # 2 epochs: the first holds the warm-up (workers, cuDNN autotuning, compilation), the second is measured.
    COMMON=(trainer=gpu trainer.max_epochs=2 data.num_workers=8)
    LARGE=(data.resize=256 data.crop=null)
    FIRST_LIMIT=150 # the first run also generates the synthetic set and checks its JPEGs
    TRAIN_LIMIT=90
    COMPILE_LIMIT=200 # inductor compiles a training and an evaluation graph
    # 430 s: with the last step's 20 s kill grace and the summary, the check ends within 8 minutes.
    BUDGET=${GPU_CHECK_BUDGET:-430}
    BENCH_DATA=(--images 600 --models resnet50 inception_v3 --device cuda --model-steps 10)
    BENCH_CAM=(--device cuda --repeats 5)
fi
CACHE=(data.cache=uint8)
# Full validation batches only: a smaller last batch would compile a third (dynamic-shape) graph.
COMPILED=(model.compile=true +trainer.limit_val_batches=$((DRY_RUN ? 1 : 8)))
if ((!HAS_CACHE)); then
    say "SKIP the cached runs: this checkout's CaltechDataModule has no data.cache (the uint8 cache is not merged)"
fi

train() { # train NAME LIMIT OVERRIDES...
    local name=$1 limit=$2
    shift 2
    step "$name" "$limit" "$PY" -m caltech_cam.train experiment=demo test=false "${COMMON[@]}" "$@" \
        "hydra.run.dir=$WORK/runs/$name"
}

# ------------------------------------------------------------------------------------------------ the runs
train demo_decode "$FIRST_LIMIT"
if ((HAS_CACHE)); then
    train demo_cached "$TRAIN_LIMIT" "${CACHE[@]}"
fi
train large_decode "$TRAIN_LIMIT" "${LARGE[@]}"
if ((HAS_CACHE)); then
    train large_cached "$TRAIN_LIMIT" "${LARGE[@]}" "${CACHE[@]}"
    train large_cached_compiled "$COMPILE_LIMIT" "${LARGE[@]}" "${CACHE[@]}" "${COMPILED[@]}"
else
    train large_decode_compiled "$COMPILE_LIMIT" "${LARGE[@]}" "${COMPILED[@]}"
fi

if $PY -c 'import pytorch_grad_cam, captum' 2>/dev/null; then
    step bench_cam 90 "$PY" "$REPO/benchmarks/bench_cam.py" "${BENCH_CAM[@]}"
else
    say "SKIP bench_cam: it needs pytorch-grad-cam and captum (pip install -e \".[bench]\")"
fi
if [[ -f "$REPO/benchmarks/bench_data.py" ]]; then
    step bench_data 300 "$PY" "$REPO/benchmarks/bench_data.py" --root "$WORK/bench_data" "${BENCH_DATA[@]}"
else
    say "SKIP bench_data: benchmarks/bench_data.py is not in this checkout (the data-path benchmark is not merged)"
fi

# ------------------------------------------------------------------------------------------------ summary
FAILED_LIST=$(printf '%s\n' "${FAILED[@]+"${FAILED[@]}"}")
say "all steps done in $((SECONDS - START)) s"
export FAILED_LIST WORK DRY_RUN
$PY - <<'EOF' | tee "$WORK/summary.txt" | tee -a "$LOG"
"""One block: the StepTimer's last-epoch numbers per run, bench_data's and bench_cam's ratio lines."""
import os
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

work = Path(os.environ["WORK"])
mode = "DRY RUN on CPU (tiny sizes: checks the steps, measures nothing)" if os.environ["DRY_RUN"] == "1" else "GPU"
print(f"==================== gpu_check summary ({mode}) ====================")
print(f"folder: {work}")
print(f"{'run':<24}{'images/s':>10}{'data-bound':>12}{'val/acc_top1':>14}{'wall s':>8}   (last epoch; wall: the process)")
for run in sorted(p for p in (work / "runs").glob("*") if p.is_dir()):
    values = {}
    for file in sorted(run.rglob("events.out.tfevents.*")):
        events = EventAccumulator(str(file), size_guidance={"scalars": 0})
        events.Reload()
        for tag in ("timing/images_per_s", "timing/data_bound_fraction", "val/acc_top1"):
            if tag in events.Tags()["scalars"]:
                values[tag] = events.Scalars(tag)[-1].value
    cells = [
        f"{values['timing/images_per_s']:>10.1f}" if "timing/images_per_s" in values else f"{'-':>10}",
        f"{values['timing/data_bound_fraction']:>12.2f}" if "timing/data_bound_fraction" in values else f"{'-':>12}",
        f"{values['val/acc_top1']:>14.3f}" if "val/acc_top1" in values else f"{'-':>14}",
    ]
    seconds = work / "steps" / f"{run.name}.seconds"
    cells.append(f"{seconds.read_text().strip() if seconds.is_file() else '-':>8}")
    print(f"{run.name:<24}{''.join(cells)}")
hints = [line for line in (work / "log.txt").read_text().splitlines() if "Training is data-bound" in line]
print(f"data-bound hints logged: {len(hints)} (one per run at most)")
for name, keys in (("bench_data", ("per core", "loader num_workers", "model ")), ("bench_cam", ("caltech_cam",))):
    path = work / "steps" / f"{name}.txt"
    if not path.is_file():
        print(f"{name}: not run")
        continue
    print(f"{name}:")
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(keys) or line.startswith("=="):
            print(f"  {line.strip()}")
failed = [f for f in os.environ["FAILED_LIST"].splitlines() if f]
print(f"failed steps: {', '.join(failed) if failed else 'none'}")
print("=" * 68)
EOF
((${#FAILED[@]} == 0))
