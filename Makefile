# gist-ray: two commands on a fresh machine.
#   make quickstart   create/reuse .venv, install gist-ray, run the quickstart sweep
#   make test         create/reuse .venv, install gist-ray with test extras, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: quickstart test test-fast install bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/gist-ray sweep search_spaces/quickstart.yaml --name quickstart-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(BIN)/python bench/gist_overhead.py --quick
	$(BIN)/python bench/throughput.py --quick
	$(BIN)/python bench/vtab_run.py --quick
	$(BIN)/python bench/sweep_efficiency.py --quick

clean:
	rm -rf runs mlruns.db mlartifacts .pytest_cache
