//go:build tools

// Package tools records what hack/build-snapshot-controller.sh builds, so `go mod tidy` keeps
// everything it needs (and the client module, whose CRDs the bed installs) in go.mod and go.sum.
package tools

import (
	_ "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	_ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"
)
