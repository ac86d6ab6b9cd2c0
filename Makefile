# Set-up and everyday commands. Each target creates/reuses the virtualenv in $(VENV) itself.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: train test lint format bench clean

$(VENV)/.base: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# llama-cpp-python builds from source: only the library the tests load
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF

$(VENV)/.test: $(VENV)/.base setup.py
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install --quiet -e ".[test]"
	touch $@

## train: the main job on its embedded default recipe
train: $(VENV)/.base
	$(VENV)/bin/erniekit train recipes/ernie4_5/debug_sft.yaml

## test: lint, then the whole suite (unit, parity, distributed, recipes)
test: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

$(VENV)/.bench: $(VENV)/.base setup.py
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $@

## bench: every suite of benchmarks/run.py (~35 min on 2 cores), then README's table from its results
bench: $(VENV)/.bench
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.table --readme

clean:
	rm -rf $(VENV) output .pytest_cache .ruff_cache
