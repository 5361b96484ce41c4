//go:build tools

// Package tools records what hack/build-csi-peer.sh builds from other modules, so `go mod tidy`
// keeps everything it needs in go.mod and go.sum.
package tools

import (
	_ "github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner"
)
