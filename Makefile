# The two set-up commands of the README:  make demo  (segment the bundled demo volume)
#                                         make test  (the whole test suite)
export PYTHONUTF8 := 1
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup data browser demo test lint benchmark

setup:
	bash scripts/setup_env.sh

data: setup
	PYTHON=$(BIN)/python bash scripts/install_data.sh

browser:
	bash scripts/install_browser.sh

demo: data
	$(BIN)/medseg demo

test: data browser
	$(BIN)/ruff check MedSegExtension MedSegModule Testing scripts benchmarks
	$(BIN)/python -m pytest -q

benchmark: data
	$(BIN)/python benchmarks/inference_speed.py
