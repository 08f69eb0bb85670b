//go:build tools

// Package tools pins the Kueue manager built by e2e/kueue/build.sh.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
