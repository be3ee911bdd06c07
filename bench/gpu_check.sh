#!/usr/bin/env bash
# The GPU checks and measurements of the performance issue, as one run of about 9 minutes on an H100.
# From the repository root on a CUDA machine with the project importable: `make install`, or on a machine without
# PyPI the wheels of bench/device_wheels.sh (copied into .whl there):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:$PWD bash bench/gpu_check.sh python3
# Full logs go to $OUT (default .bench/gpu_check) as they come, so a run cut short still leaves what it measured;
# the ends of them go to stdout.
# BENCH_ARGS replaces the workload, e.g. BENCH_ARGS='tiny --varlen --steps 8 --seq 32 --reps 1' to try it on a CPU.
set -uo pipefail
python=${1:-python}
read -ra workload <<<"${BENCH_ARGS:-qwen0.5b --varlen --steps 30 --bs 8 --seq 256 --reps 2}"
out=${OUT:-.bench/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$python" -c 'import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())'

# 1. The CUDA paths are right: the varlen kernel runs (grouped K/V heads unrepeated) and matches the padded forward,
#    compiled too (one graph); QLoRA; memory freed on cancel.
timeout 240 "$python" -m pytest -q -p no:cacheprovider -m "not slow" tests/test_padding_free.py tests/test_gpu.py \
  tests/test_layer_compile.py >"$out/tests.log" 2>&1
tail -15 "$out/tests.log"

# 2. End to end, 0.5B shape, chat-like lengths, alternating: the provider's defaults (packed where FlashAttention
#    runs); the two levers for its host-bound steps: a bf16 model with the fp32 master weights in the optimizer
#    (master_weights: optimizer: no autocast casts), and that with compiled decoder layers (torch_compile: fused
#    elementwise kernels, far fewer launches); raw TRL on the defaults' settings; TRL's own defaults. Gives MFU,
#    the provider/raw ratio, the defaults' gain over TRL's on the same card, and each lever's gain.
#    No epoch checkpoint: it is written after the measured steps and only costs this run time.
"$python" bench/dpo_bench.py "${workload[@]}" --provider-config save_every_epoch=false \
  --arms provider,bf16_model,compiled,raw_trl,trl_defaults --variant bf16_model=master_weights=optimizer \
  --variant compiled=master_weights=optimizer,torch_compile=true \
  --json-out "$out/bench.json" >"$out/bench.log" 2>&1
grep -v Warning "$out/bench.log" | tail -18

# 3. Where a step's time goes, in both: GPU busy share, kernel time by kind, launches and syncs, and the host
#    operators behind them.
for arm in compiled bf16_model; do
  job=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['runs'][sys.argv[2]][-1]['job_dir'])" \
    "$out/bench.json" "$arm") || continue
  "$python" bench/profile_steps.py "$job" --json-out "$out/profile_$arm.json" >"$out/profile_$arm.log" 2>&1
  grep -v Warning "$out/profile_$arm.log" | tail -40
done
