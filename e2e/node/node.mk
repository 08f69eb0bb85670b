# Images and the real test node (see e2e/README.md). Included by the top-level Makefile:
#   -include e2e/node/node.mk

TRAINYARD_CACHE ?= $(HOME)/.cache/trainyard
TRAINYARD_E2E := $(patsubst %/node/,%,$(dir $(lastword $(MAKEFILE_LIST))))
NODE_KUBECONFIG := $(TRAINYARD_CACHE)/clusters/trainyard-node/kubeconfig
# local: a base made here (debootstrap) and the wheel cache, no registry; public: python:3.11 slim.
IMAGES_BASE ?= local

.PHONY: images images-check node-deps node-tools node-up node-down node-smoke

## node-deps: the Debian packages of the images and the node (docker.io, containerd, runc, CNI plugins, debootstrap)
node-deps:
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_E2E)/node/deps.sh"

## images: build trainyard/operator:<appVersion> and trainyard/trainer:<tag> with Docker (cached by content hash)
images:
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" IMAGES_BASE="$(IMAGES_BASE)" "$(TRAINYARD_E2E)/images/build.sh"

## images-check: non-root users, read-only root for the operator, torch + a gloo all_reduce in the trainer
images-check: images
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_E2E)/images/check.sh"

## node-tools: build kubelet, CoreDNS, crictl and the sandbox image (cached), after the control plane's tools
node-tools: cluster-tools
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_E2E)/node/build.sh"

## node-up: the control plane "trainyard-node" plus a real kubelet node, the images imported; kubeconfig at $(NODE_KUBECONFIG)
node-up: node-deps node-tools images
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_E2E)/node/up.sh"
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_E2E)/node/load-images.sh" \
		"trainyard/operator:$$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/trainyard/Chart.yaml)" \
		"$$(sed -n 's/^ *image: *\(trainyard\/trainer:[^ ]*\)$$/\1/p' examples/digits-ddp.yaml | head -1)"

## node-down: take the node apart (no process, mount, bridge, iptables rule or netns left) and delete its cluster
node-down:
	TRAINYARD_CACHE="$(TRAINYARD_CACHE)" "$(TRAINYARD_E2E)/node/down.sh" --cluster

## node-smoke: the node tier (tests/node) against the running node
node-smoke:
	TRAINYARD_KEEP_NODE=1 $(VENV)/bin/pytest tests/node -q
