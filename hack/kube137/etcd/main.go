// Command etcd is the upstream etcd server (what go.etcd.io/etcd/v3's main does), built from
// the module proxy for the Kubernetes 1.37 bed.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
