//go:build !linux

package network

import (
	"context"
	"errors"
	"os/exec"
)

type live struct{}

var errUnsupported = errors.New("network: VM networking needs Linux")

// Setup is Linux only; elsewhere it supports mode none.
func Setup(ctx context.Context, cfg Config) (*Network, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Mode != ModeNone {
		return nil, errUnsupported
	}
	return &Network{Mode: ModeNone, ID: cfg.ID}, nil
}

func (n *Network) Teardown() error { return nil }

func (n *Network) StartProcess(cmd *exec.Cmd) error { return cmd.Start() }

func Reclaim(n *Network) error { return nil }

func MaybeRunHolder() {}
