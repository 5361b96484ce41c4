// Command mock-driver serves a CSI driver whose volumes live in memory only: Kubernetes' e2e mock
// service (what csi-test's mock driver became) on a unix socket, for the provisioning bench's CSI
// peer (benches/provisioning). Its CreateVolume and DeleteVolume cost next to nothing, so what the
// bench measures is kubernetes-csi's sidecar pipeline itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"k8s.io/kubernetes/test/e2e/storage/drivers/csi-test/driver"
	"k8s.io/kubernetes/test/e2e/storage/drivers/csi-test/mock/service"
)

func main() {
	addr := flag.String("csi-address", "", "path of the unix socket to serve CSI on (created; must not exist)")
	name := flag.String("name", service.Name, "the driver's name (GetPluginInfo), the StorageClass's provisioner")
	flag.Parse()
	if *addr == "" {
		fmt.Fprintln(os.Stderr, "mock-driver: --csi-address is required")
		os.Exit(2)
	}
	// No topology (the bed has no nodes), no attach: CreateVolume and DeleteVolume only.
	svc := service.New(service.Config{DriverName: *name, DisableAttach: true})
	l, err := net.Listen("unix", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mock-driver: cannot listen on %s: %v\n", *addr, err)
		os.Exit(1)
	}
	d := driver.NewCSIDriver(&driver.CSIDriverServers{Controller: svc, Identity: svc, Node: svc})
	// A pass-through interceptor: the default one logs every call as JSON, a cost the bench
	// would otherwise charge to the pipeline.
	plain := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(ctx, req)
	}
	if err := d.Start(l, plain); err != nil {
		fmt.Fprintf(os.Stderr, "mock-driver: cannot serve on %s: %v\n", *addr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "mock-driver: serving %s on %s\n", *name, *addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	d.Stop()
	_ = os.Remove(*addr)
}
