# Two commands matter: `make demo` and `make test`. Each sets up everything on a bare machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt
export MINDLENS_ASSETS ?= $(abspath ../shared/assets)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt requirements-peers.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "mindlens needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev,onnx,volumes,web]'
	$(PIP) --no-deps -r requirements-peers.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mindlens demo --out demo-report
	@echo "open demo-report/report.html"

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) demo-report .pytest_cache
