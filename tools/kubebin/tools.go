//go:build tools

// Package kubebin only exists so that `go mod tidy` records, in this module's
// go.mod/go.sum, every dependency of the Kubernetes commands we build from source
// (no registry we can reach ships kube-apiserver). Build with hack/build-kube-bins.
package kubebin

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
