//go:build tools

// Package tools pins the commands built by e2e/cluster/build.sh.
package tools

import (
	_ "github.com/rhysd/actionlint/cmd/actionlint"
)
