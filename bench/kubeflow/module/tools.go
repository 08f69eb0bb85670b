//go:build tools

// Package tools pins the command built by bench/kubeflow/build.sh.
package tools

import (
	_ "github.com/kubeflow/training-operator/cmd/training-operator.v1"
)
