#!/usr/bin/env bash
# The GPU checks and measurements the performance issue still needs, as one run (about 10 minutes on an H100).
# From the repository root on a CUDA machine, with the project importable (make install, or its wheels on
# PYTHONPATH): bash bench/gpu_check.sh [PYTHON]
set -uo pipefail
python=${1:-python}
"$python" -m pytest -q -p no:cacheprovider tests/test_padding_free.py tests/test_gpu.py 2>&1 | tail -15
for grouping in --grouped ""; do  # one forward + backward, packed vs padded, 0.5B shape
  "$python" bench/padding_free_forward.py qwen0.5b --bs 8 --seq 256 --reps 5 $grouping
done
for packed in true false; do  # end to end through the server, against raw TRL with the same settings
  "$python" bench/dpo_bench.py qwen0.5b --varlen --steps 40 --bs 8 --seq 256 --reps 2 --arms provider,raw_trl \
    --provider-config padding_free=$packed 2>&1 | grep -v Warning | tail -6
done
