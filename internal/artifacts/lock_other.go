//go:build !linux

package artifacts

import (
	"context"
	"errors"
)

func lockDir(context.Context, string, func()) (func(), error) {
	return nil, errors.New("fcvm setup runs on Linux only")
}

func unmountUnder(string) error { return nil }
