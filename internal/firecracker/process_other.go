//go:build !linux

package firecracker

import (
	"errors"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func enterNetNS(string) error { return errors.New("network namespaces need Linux") }
