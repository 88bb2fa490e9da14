package firecracker

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr kills Firecracker with its supervisor, and puts it in its
// own process group so a terminal's Ctrl-C reaches the supervisor (which
// stops the VM properly) rather than the VMM.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// enterNetNS moves the calling thread into the network namespace at path.
// The caller has locked the thread and never unlocks it.
func enterNetNS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	return nil
}
