//go:build tools

// Package tools pins the commands built by e2e/cluster/build.sh.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
