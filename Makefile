# Trainyard. `make demo` and `make test` work on a fresh machine: they install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml trainer-image/pyproject.toml | sha1sum | cut -c1-12)
DEMO_DIR ?= $(or $(TMPDIR),/tmp)/trainyard-demo
CRD := crds/trainyard.dev_distributedtrainingjobs.yaml
CHART_CRD := charts/trainyard/crds/trainyard.dev_distributedtrainingjobs.yaml

-include e2e/cluster/cluster.mk
-include e2e/node/node.mk
-include e2e/kueue/kueue.mk

.PHONY: setup test unit test-cluster test-kueue test-chart actionlint images lint crds verify demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml trainer-image/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e 'trainer-image[examples,tensorflow]'
	touch $@

crds: setup
	$(PY) -m trainyard.cli crd > $(CRD)
	cp $(CRD) $(CHART_CRD)

verify: setup
	@$(PY) -m trainyard.cli crd | diff -u $(CRD) - || { echo "$(CRD) is stale: run 'make crds'"; exit 1; }
	@diff -u $(CRD) $(CHART_CRD) || { echo "$(CHART_CRD) is stale: run 'make crds'"; exit 1; }
	@echo "generated files are current"

lint: setup
	$(VENV)/bin/ruff check operator tests trainer-image

unit: setup
	$(VENV)/bin/pytest tests/unit -q

# The cluster tier builds the control plane from Go modules on first use (see e2e/cluster/).
test-cluster: setup
	$(VENV)/bin/pytest tests/cluster -q

# The Kueue tier alone: real Kueue (built from Go modules by e2e/kueue/build.sh, cached) on a
# control plane of its own; see e2e/kueue/README.md.
test-kueue: setup
	$(VENV)/bin/pytest tests/kueue -q

# The chart tier alone: helm lint, values schema, template snapshots, install/upgrade/uninstall on
# its own kwok cluster, actionlint on .github/workflows (helm/actionlint are built on first use).
test-chart: setup
	$(VENV)/bin/pytest tests/chart -q

# Lint .github/workflows with the pinned actionlint (built from Go modules by e2e/cluster/build.sh).
actionlint: cluster-tools
	$(CLUSTER_BIN)/actionlint

test: setup lint verify
	$(VENV)/bin/pytest tests -q --durations=25

# The main example job on 2 local workers; worker 1 is killed mid-training on purpose, the gang
# restarts and resumes from the last checkpoint, and the job ends Succeeded with its accuracy.
demo: setup
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/trainyard run examples/digits-ddp.yaml --workers 2 --workdir $(DEMO_DIR) \
		--checkpoint-dir $(DEMO_DIR)/checkpoints --inject-failure worker=1,at-step=230

# Every benchmark side by side (bench/README.md); BENCH=p1,p3 runs only those.
bench: setup
	$(PY) -m bench $(if $(BENCH),--only $(BENCH))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache bench/.venv-ray
