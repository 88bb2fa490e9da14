//go:build !linux

package guestmod

import "errors"

var errNoDevice = errors.New("no such device")

func kernelRelease() (string, error) { return "", errors.New("guestmod: Linux only") }

func finitModule(path, params string) error { return errors.New("guestmod: Linux only") }
