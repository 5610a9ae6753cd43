# One command to set up and run the quickstart, one to run the tests (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup quickstart test lint

setup: $(VENV)/.installed

# torch is pinned in constraints/cpu.txt: an unpinned torch pulls the multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e '.[cpu,dev,pyserini,tensorboard,wandb]'
	touch $@

quickstart: setup
	$(BIN)/retrodistill quickstart

lint: setup
	$(BIN)/ruff check retrodistill tests benchmarks
	$(BIN)/mypy retrodistill

# The full offline suite: slow tests on the real data and model included (skipped where those are absent).
test: setup lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not gpu and not network"
