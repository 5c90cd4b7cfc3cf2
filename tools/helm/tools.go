//go:build tools

// Package helmbin pins helm (helm.sh/helm/v3) in this module's go.mod/go.sum so the
// chart work builds the same helm everywhere, from source (hack/build-kube-bins).
// It is a module of its own because helm's k8s.io/* versions differ from the
// v1.36 staging modules used by tools/kubebin.
package helmbin

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
