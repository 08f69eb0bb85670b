# Kueue, built from Go modules and run as a local process against a kwokctl cluster
# (see e2e/kueue/README.md). Include from the top-level Makefile:  -include e2e/kueue/kueue.mk

TRAINYARD_CACHE ?= $(HOME)/.cache/trainyard
TRAINYARD_KUEUE_SCRIPTS := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
KUEUE_CLUSTER ?= trainyard

.PHONY: kueue-tools kueue-up kueue-down kueue-prototype

## kueue-tools: build Kueue's manager from Go modules (cached)
kueue-tools:
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_KUEUE_SCRIPTS)/build.sh"

## kueue-up: start (or reuse) Kueue for cluster $(KUEUE_CLUSTER) (starts the cluster too)
kueue-up:
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_KUEUE_SCRIPTS)/up.sh" "$(KUEUE_CLUSTER)"

## kueue-down: stop Kueue of cluster $(KUEUE_CLUSTER) and remove its webhooks
kueue-down:
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_KUEUE_SCRIPTS)/down.sh" "$(KUEUE_CLUSTER)"

## kueue-prototype: run the route A prototype against cluster $(KUEUE_CLUSTER)
kueue-prototype: kueue-up
	KUBECONFIG="$(TRAINYARD_CACHE)/clusters/$(KUEUE_CLUSTER)/kubeconfig" python3 "$(TRAINYARD_KUEUE_SCRIPTS)/prototype.py" setup
	KUBECONFIG="$(TRAINYARD_CACHE)/clusters/$(KUEUE_CLUSTER)/kubeconfig" python3 "$(TRAINYARD_KUEUE_SCRIPTS)/prototype.py" route-a
