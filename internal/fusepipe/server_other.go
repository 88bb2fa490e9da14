//go:build !linux

package fusepipe

import (
	"errors"
	"syscall"
)

// The server needs openat2 and O_PATH: Linux only. Elsewhere only the
// wire codec is usable.

type serverSys struct{}

func (*serverSys) open(string) error                            { return errors.ErrUnsupported }
func (*serverSys) close() error                                 { return nil }
func (*serverSys) addRoot(*session) error                       { return errors.ErrUnsupported }
func (*session) handle(*Request, *Reply, <-chan struct{}) error { return syscall.ENOSYS }

type dirHandle struct{}

func (*dirHandle) close() {}

func (*session) dropLocks(*node) {}
