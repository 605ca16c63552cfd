# The two commands of the README: `make bench` (the main job) and `make test`.
# Each creates or reuses .venv through scripts/setup.sh.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test bench lint
setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

bench: setup
	$(VENV)/bin/mixupe bench quick

lint: setup
	$(VENV)/bin/ruff check .
