//go:build tools

// Package containerdbin only exists so that `go mod tidy` records, in this module's
// go.mod/go.sum, every dependency of containerd 2 and its runc shim, which the node
// cluster of the in-cluster tests runs (design.md §7). Build with
// `hack/build-kube-bins --only node`.
package containerdbin

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
