package firecracker

import (
	"context"
	"fmt"

	"github.com/fcvm/fcvm/internal/vmm"
)

var _ vmm.Pauser = (*Machine)(nil)

// Pause implements vmm.Pauser: PATCH /vm {"state": "Paused"}, which
// Firecracker answers once the vCPUs are stopped.
func (m *Machine) Pause(ctx context.Context) error {
	if err := m.send(ctx, []Request{PatchVM(VMPaused)}); err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	return nil
}

// Resume implements vmm.Pauser: PATCH /vm {"state": "Resumed"}.
func (m *Machine) Resume(ctx context.Context) error {
	if err := m.send(ctx, []Request{PatchVM(VMResumed)}); err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	return nil
}
