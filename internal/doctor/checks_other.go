//go:build !linux

package doctor

import "context"

func unsupported(name, neededFor string) Check {
	return Check{Name: name, Detail: "not checked: fcvm runs VMs on Linux hosts only", NeededFor: neededFor}
}

func checkKVM(context.Context, Options) Check { return unsupported("kvm", "--vmm firecracker") }

func checkUserfaultfd(context.Context, Options) Check {
	return unsupported("userfaultfd", "firecracker clones")
}

func checkReflink(context.Context, Options) Check {
	return unsupported("reflink", "instant disk copies")
}

func checkNftables(context.Context, Options) Check {
	return unsupported("nftables", "--network bridged")
}

func checkFUSE(context.Context, Options) Check { return unsupported("fuse", "volume tests") }
