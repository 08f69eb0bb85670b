# Local Kubernetes control plane for e2e tests (see e2e/cluster/README.md).
# Included by the top-level Makefile:  include e2e/cluster/cluster.mk

TRAINYARD_CACHE ?= $(HOME)/.cache/trainyard
CLUSTER_BIN := $(TRAINYARD_CACHE)/bin/current
CLUSTER_KUBECONFIG := $(TRAINYARD_CACHE)/clusters/trainyard/kubeconfig
TRAINYARD_CLUSTER_SCRIPTS := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

.PHONY: cluster-tools cluster-up cluster-down

## cluster-tools: build kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok, kwokctl, helm, actionlint from Go modules (cached)
cluster-tools:
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_CLUSTER_SCRIPTS)/build.sh"

## cluster-up: start (or reuse) the local cluster "trainyard"; kubeconfig at $(CLUSTER_KUBECONFIG)
cluster-up: cluster-tools
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_CLUSTER_SCRIPTS)/up.sh" trainyard

## cluster-down: delete the local cluster "trainyard"
cluster-down:
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_CLUSTER_SCRIPTS)/down.sh" trainyard

.PHONY: cluster-smoke
## cluster-smoke: check the running cluster "trainyard" (nodes, pods, GC, CEL, RBAC, helm)
cluster-smoke:
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_CLUSTER_SCRIPTS)/smoke.sh" trainyard
