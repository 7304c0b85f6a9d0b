# Two entry points: `make demo` (install + a real PPO training run) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/pgkit train ppo --env CartPole-v1 --seeds 8 --out runs/demo

test: install
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

test-quick: install  # estimators and machinery, no end-to-end training (a few minutes)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder -m "not slow"

zoo: install  # train every preset (8 seeds each) and write docs/zoo.md with learning curves
	$(BIN)/pgkit zoo --out docs

bench: install
	$(BIN)/python bench/compare.py

.PHONY: install demo test test-quick zoo bench
