# The README's two entry commands. Each creates or updates the local virtualenv first.
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/quick

.PHONY: train test setup

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[synth,test]'
	touch $@

# Quick CPU training on the built-in synthetic words; ends with validation
# accuracy and sample predictions. Re-running resumes from runs/quick.
train: setup
	$(PY) scripts/train.py --config configs/quick.py --workdir $(WORKDIR)

# The formatter and the linter on the whole tree first (pyproject.toml: [tool.pyink],
# [tool.ruff]), then the tests in two worker processes (pytest-xdist): most of the suite's
# time is XLA compiling, one core at a time, so two workers use both cores of the
# project's machines (suite 680 s -> 517 s there). Work-stealing, because a few tests
# (the multi-process and resume ones) take a minute each.
test: setup
	$(VENV)/bin/pyink --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=15
