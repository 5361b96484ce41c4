//go:build tools

// Package tools records what hack/build-helm.sh builds, so `go mod tidy` keeps everything it
// needs in go.mod and go.sum.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
