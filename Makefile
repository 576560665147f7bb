# The two commands of the README: `make report` and `make test`.
# Each creates .venv when missing and installs the project (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NCLSM := $(VENV)/bin/nclsm
STAMP := $(VENV)/.nclsm-installed
DATA ?= data
NCLSM_REPO ?=
ARGS ?=

.PHONY: report test test-all install site data bench clean-data

install: $(STAMP)

# torch: on a machine without an NVIDIA GPU take the CPU wheel (pip finds the local
# torch==2.13.0 CPU wheel where one is provided); with a GPU let pip choose the CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet "torch==2.13.0" \
		|| $(PY) -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu \
		|| true; fi
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

report: install
	$(NCLSM) report --data $(DATA) $(if $(NCLSM_REPO),--ncl-sm-repo $(NCLSM_REPO)) $(ARGS)

test: install
	@bash scripts/ensure_chromium.sh || echo "note: chromium unavailable; the screenshot test will be skipped"
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -m "not slow" $(ARGS)

test-all: install
	$(PY) -m pytest $(ARGS)

site: install
	$(NCLSM) site

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-data:
	rm -rf data/synthetic data/models data/predictions data/overviews data/work reports/*.ipynb reports/*.csv _site
