// Command containerd-shim-fcvm-v2 is fcvm's containerd runtime shim
// (runtime type io.containerd.fcvm.v2): containerd starts it to run a
// container in an fcvm microVM. See internal/shim and the README.
//
// It is a binary of its own, not fcvm called by another name: linking
// containerd's packages into fcvm made every fcvm command's package
// initialisation 1.3 ms slower (median of 20 runs of `fcvm --help` with
// GODEBUG=inittrace=1: 1.9 ms before, 3.2 ms after; `fcvm ls -a` over 100
// records, BenchmarkLsBinary100: 10.0-11.0 ms before, 11.8-12.6 ms after),
// and `fcvm ls` must start fast.
package main

import (
	"github.com/fcvm/fcvm/internal/network"
	"github.com/fcvm/fcvm/internal/shim"
)

func main() {
	// The shim re-executes itself as the holder of a rootless VM's
	// namespaces, as fcvm does.
	network.MaybeRunHolder()
	shim.Main()
}
