//go:build tools

// Package promtoolbin pins promtool (github.com/prometheus/prometheus/cmd/promtool) in this
// module's go.mod/go.sum so the alert rules of the chart are checked and unit-tested with the
// same promtool everywhere, built from source (hack/build-kube-bins --only promtool).
// It is a module of its own because Prometheus' k8s.io/* versions differ from those of
// tools/kubebin and tools/helm.
package promtoolbin

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
