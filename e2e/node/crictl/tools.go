//go:build tools

// Package tools pins the command built by e2e/node/build.sh.
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
