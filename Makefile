# The two commands (see README.md):
#   make run    set up .venv if needed, then the main job: `normspec all`
#   make test   set up .venv if needed, then the test suite
# Versions are pinned in constraints.txt, the one place they are pinned.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench setup

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/normspec all

# the suite on every core (pytest-xdist), each test file on one worker (module fixtures run once)
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n auto --dist loadfile

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_references.py
