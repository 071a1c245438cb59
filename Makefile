# Two commands for a newcomer: `make demo` (install + train `embed` on its embedded data: digits, then
# unseen Greek letters by nearest neighbour, about a minute on 2 cores)
# and `make test` (install + the default test suite). Both create ./.venv with pinned versions.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install demo test test-all lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 -c constraints.txt
	$(BIN)/pip install -q -e '.[dev]' -c constraints.txt

demo: install
	$(BIN)/python train.py task=embed

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf outputs multirun .pytest_cache
