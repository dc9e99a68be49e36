# Quick start (a fresh machine, no network needed beyond the package registry):
#   make demo   -- create .venv, install isr_reid, run `isr-reid demo`
#   make test   -- create .venv, install isr_reid with its extras, lint, run the test suite
VENV ?= .venv
PYTHON ?= python3
DATA ?= $(abspath ../shared/data)
DEMO_OUT ?= demo_output
BIN := $(VENV)/bin

.PHONY: demo test lint install clean

$(BIN)/.installed: pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,train,faiss,onnx,trackers,demo]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/isr-reid demo --output $(DEMO_OUT)

lint: $(BIN)/.installed
	$(BIN)/ruff check isr_reid tests benchmarks examples

test: lint
	ISR_REID_DATA=$(DATA) $(BIN)/python -m pytest -n 2 --dist loadgroup

clean:
	rm -rf $(VENV) build dist *.egg-info $(DEMO_OUT)
