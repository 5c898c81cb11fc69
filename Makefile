# `make demo` and `make test` each set up .venv on first use through `make install`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ROOT ?= experiments/demo
KDCORE := $(BIN)/kdcore

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q kdcore  # bytecode now: with PYTHONDONTWRITEBYTECODE set, every start would compile the sources
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(KDCORE) pipeline --experiment-root $(DEMO_ROOT)
	$(KDCORE) report --experiment-root $(DEMO_ROOT)

test: install
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

bench: install
	$(BIN)/python benchmarks/run_all.py --out bench.json

clean:
	rm -rf $(VENV) experiments build *.egg-info
