# Two entry points (see README): `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: this pin takes a CPU build where one is provided locally; a looser
# requirement can pull a multi-GB CUDA build. Override with e.g. `make TORCH='torch==2.13.0' ...`.
TORCH ?= torch==2.13.0
CORES ?= 2
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test docs lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

run: install
	$(BIN)/snakemake --cores $(CORES)

test: install
	$(BIN)/python -m pytest -n auto --dist loadgroup

docs: install
	$(BIN)/sphinx-build -W -b html docs build/docs

lint: install
	$(BIN)/ruff check rlae_sc tests benchmarks
	$(BIN)/snakemake --lint

clean:
	rm -rf results logs data/generated .snakemake
