// Command fcvm runs OCI containers in microVMs. See the README.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fcvm/fcvm/internal/cli"
	"github.com/fcvm/fcvm/internal/network"
)

func main() {
	// fcvm re-executes itself as the holder of a rootless VM's namespaces.
	network.MaybeRunHolder()
	// SIGHUP (the terminal closed) ends a foreground run as Ctrl-C does: the
	// VM is stopped and cleaned up rather than left for fcvm gc.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
