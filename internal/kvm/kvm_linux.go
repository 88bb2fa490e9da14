package kvm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// kvmGetAPIVersion is KVM_GET_API_VERSION, _IO(0xAE, 0x00); the stable
// API has been version 12 since Linux 2.6.22.
const kvmGetAPIVersion = 0xAE00

func apiVersion(f *os.File) error {
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != 12 {
		return fmt.Errorf("%s answers KVM_GET_API_VERSION with %d (%v), want 12", f.Name(), v, err)
	}
	return nil
}
