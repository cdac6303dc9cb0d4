#!/usr/bin/env bash
# The GPU figures of docs/results.md in one script, each stage under its own time limit so one slow stage cannot eat
# the others; logs and results go to OUT.
#
#   bash benchmarks/gpu_run.sh OUT [STAGES] [TRAIN_STEPS]
#
# STAGES (comma-separated, default checks,throughput): checks (benchmarks/gpu_checks.py), throughput
# (benchmarks/train_throughput.py: the quick model eager and compiled, the ~90 M model under ZeRO-2 in bf16),
# quickstart (`unimask quickstart --mode gpu`, TRAIN_STEPS overriding the plan's steps when given).
# On a machine without package registries, put the wheels of ../shared/tools/gpu-prep in .whl/ and the GL packages
# in .gl/ (that script's header says how); they are installed first.
set -u
OUT=${1:?usage: gpu_run.sh OUT [STAGES] [TRAIN_STEPS]}
STAGES=${2:-checks,throughput}
TRAIN_STEPS=${3:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MUJOCO_GL=egl
if [ -d .gl ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
if [ -d .whl ]; then
  site=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH=$site PATH=$site/bin:$PATH
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/device.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

stage() {  # stage NAME SECONDS COMMAND...: run under a time limit, keep its log, print its end
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"
  grep -v -E "Warning|warn\(|it/s\]|s/it\]" "$OUT/$name.log" | tail -n 25
}

if [[ ,$STAGES, == *,checks,* ]]; then
  stage checks 100 python3 benchmarks/gpu_checks.py
fi
if [[ ,$STAGES, == *,throughput,* ]]; then
  # Eager runs first: a compile that fails or runs long cannot cost the other figures.
  T="python3 benchmarks/train_throughput.py --json $OUT/throughput.jsonl --steps 30 --warmup 8"
  Z="--models 90m --shape seq256 --batch 128 --deepspeed configs/deepspeed/zero2.json"
  stage throughput-quick 60 $T --models quick,25m --batch 64
  stage throughput-90m 80 $T $Z
  stage throughput-quick-compiled 120 $T --models quick --batch 64 --compile reduce-overhead
  stage throughput-90m-compiled 150 $T $Z --compile default --attention flex
fi
if [[ ,$STAGES, == *,quickstart,* ]]; then
  run=runs/gpu-quickstart
  stage quickstart-plan 240 unimask quickstart --mode gpu --out $run --until plan
  if [ -n "$TRAIN_STEPS" ]; then
    sed -i "s/^  steps: .*/  steps: $TRAIN_STEPS/" $run/train.yaml
  fi
  stage quickstart 540 unimask quickstart --mode gpu --out $run
  cp $run/report.json $run/report.md "$OUT"/ 2>/dev/null
  tail -n 5 $run/train/metrics.jsonl > "$OUT/metrics-tail.jsonl" 2>/dev/null
fi
