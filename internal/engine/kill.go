package engine

import (
	"context"
	"fmt"
	"syscall"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// Kill sends sig to the main process of the container in the running VM
// nameOrID, through its supervisor and the guest agent, the path stop's
// SIGTERM takes. It returns once the guest has delivered the signal; the
// container's exit, if the signal ends it, is for Wait to see.
func (e *Engine) Kill(ctx context.Context, nameOrID string, sig syscall.Signal) error {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return err
	}
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindSignal, Signal: int(sig)})
	if err != nil {
		return fmt.Errorf("kill %s: %w", nameOrID, err)
	}
	return conn.Close()
}
