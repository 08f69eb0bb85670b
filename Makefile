# Trainyard. `make demo` and `make test` work on a fresh machine: they install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
CRD := crds/trainyard.dev_distributedtrainingjobs.yaml
CHART_CRD := charts/trainyard/crds/trainyard.dev_distributedtrainingjobs.yaml

-include e2e/cluster/cluster.mk

.PHONY: setup test unit test-cluster lint crds verify demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

crds: setup
	$(PY) -m trainyard.cli crd > $(CRD)
	cp $(CRD) $(CHART_CRD)

verify: setup
	@$(PY) -m trainyard.cli crd | diff -u $(CRD) - || { echo "$(CRD) is stale: run 'make crds'"; exit 1; }
	@diff -u $(CRD) $(CHART_CRD) || { echo "$(CHART_CRD) is stale: run 'make crds'"; exit 1; }
	@echo "generated files are current"

lint: setup
	$(VENV)/bin/ruff check operator tests

unit: setup
	$(VENV)/bin/pytest tests/unit -q

# The cluster tier builds the control plane from Go modules on first use (see e2e/cluster/).
test-cluster: setup
	$(VENV)/bin/pytest tests/cluster -q

test: setup lint verify
	$(VENV)/bin/pytest tests -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
