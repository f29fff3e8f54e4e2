# Relais: the two commands are `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: test demo demo-stop deps venv lint unit bench clean

deps:
	@scripts/install-deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

# Two workers, a test file each at a time: the lab tests mostly wait on kernels, brokers
# and servers, so the suite takes about half the time (their namespaces and ports are
# unique per process).
test: deps venv lint
	$(VENV)/bin/pytest -n 2 --dist loadfile

unit: venv
	$(VENV)/bin/pytest tests/unit

bench: deps venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

demo: deps venv
	@$(PY) -m scripts.demo start

demo-stop: venv
	@$(PY) -m scripts.demo stop

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
