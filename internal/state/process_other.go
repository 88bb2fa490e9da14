//go:build !linux

package state

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

var osGetpid = os.Getpid

// ProcessOf needs /proc: on other systems it always fails.
func ProcessOf(pid int) (Process, error) {
	return Process{}, fmt.Errorf("read process %d: %w", pid, errors.ErrUnsupported)
}

// Memory needs /proc: on other systems it always fails.
func (p Process) Memory() (Memory, error) {
	return Memory{}, fmt.Errorf("read memory of %v: %w", p, errors.ErrUnsupported)
}

// Signal needs pidfds: on other systems it always fails.
func (p Process) Signal(sig syscall.Signal) error {
	return fmt.Errorf("signal %v: %w", p, errors.ErrUnsupported)
}
