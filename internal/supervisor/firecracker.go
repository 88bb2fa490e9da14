package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
)

// firecrackerUnavailable says what stops Firecracker from running here.
func firecrackerUnavailable() error {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return errors.New("firecracker needs /dev/kvm, which this host does not have (no KVM or no nested virtualisation): use --vmm qemu")
	}
	if _, err := exec.LookPath("firecracker"); err != nil {
		return fmt.Errorf("firecracker binary not found: install it with `fcvm setup firecracker --from PATH`, or use --vmm qemu")
	}
	return nil
}
