#!/usr/bin/env bash
# Print the path of a working Python 3.12 interpreter: python3.12 on PATH, else pyenv's versions/3.12.*.
set -u
candidates=()
command -v python3.12 >/dev/null 2>&1 && candidates+=("$(command -v python3.12)")
if command -v pyenv >/dev/null 2>&1; then
  for p in "$(pyenv root)"/versions/3.12.*/bin/python3.12; do candidates+=("$p"); done
fi
for p in "$HOME"/.pyenv/versions/3.12.*/bin/python3.12; do candidates+=("$p"); done
for p in "${candidates[@]}"; do
  # a pyenv shim exists even when no 3.12 is selected, so ask the interpreter itself
  if [ -x "$p" ] && "$p" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
    echo "$p"
    exit 0
  fi
done
echo "error: Python 3.12 not found (llama-stack 0.6.1 needs Python >= 3.12)." >&2
echo "       Install it (e.g. 'pyenv install 3.12' or your OS package python3.12) or run: make PYTHON=/path/to/python3.12" >&2
exit 1
