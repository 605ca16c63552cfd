# The two commands of the README: `make bench` (the main job) and `make test`.
# Each creates or reuses .venv through scripts/setup.sh.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test bench lint results
setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

bench: setup
	$(VENV)/bin/mixupe bench quick --jobs 2 --threads-per-run 1

lint: setup
	$(VENV)/bin/ruff check .

# docs/RESULTS.md and docs/results/ from the studies' run logs in results/ (no training;
# fails if the hand-written preamble quotes a figure the report does not contain).
results: setup
	$(VENV)/bin/mixupe report results --out docs/results --document docs/RESULTS.md \
		--preamble docs/RESULTS.preamble.md > /dev/null
