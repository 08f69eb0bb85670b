//go:build tools

// Package tools pins the k8s.io/kubernetes command built by e2e/node/build.sh.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kubelet"
)
