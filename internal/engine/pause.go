package engine

import (
	"context"
	"fmt"

	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// Pause freezes the running VM nameOrID: its VMM stops the guest's vCPUs,
// and its record says paused until Unpause. Memory, disks and the
// network stay as they are; exec, kill and snapshot are refused meanwhile,
// and stop resumes the VM to stop it.
func (e *Engine) Pause(ctx context.Context, nameOrID string) error {
	rec, err := e.Inspect(nameOrID)
	if err != nil {
		return err
	}
	switch s := rec.Effective(); s {
	case state.StatusRunning:
	case state.StatusPaused:
		return fmt.Errorf("pause %s: the VM is already paused", nameOrID)
	default:
		return fmt.Errorf("pause %s: the VM is not running (%s): only a running VM can be paused", nameOrID, s)
	}
	if err := supervisor.RequestPause(ctx, rec.RuntimeDir); err != nil {
		return fmt.Errorf("pause %s: %w", nameOrID, err)
	}
	return nil
}

// Unpause thaws the VM nameOrID that Pause froze.
func (e *Engine) Unpause(ctx context.Context, nameOrID string) error {
	rec, err := e.Inspect(nameOrID)
	if err != nil {
		return err
	}
	if s := rec.Effective(); s != state.StatusPaused {
		return fmt.Errorf("unpause %s: the VM is not paused (%s)", nameOrID, s)
	}
	if err := supervisor.RequestResume(ctx, rec.RuntimeDir); err != nil {
		return fmt.Errorf("unpause %s: %w", nameOrID, err)
	}
	return nil
}
