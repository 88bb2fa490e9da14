//go:build !linux

package kvm

import (
	"errors"
	"os"
)

func apiVersion(*os.File) error { return errors.New("KVM is Linux only") }
