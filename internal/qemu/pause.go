package qemu

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fcvm/fcvm/internal/vmm"
)

var _ vmm.Pauser = (*Machine)(nil)

// Pause implements vmm.Pauser with QMP's stop, which returns once the
// vCPUs are stopped.
func (m *Machine) Pause(ctx context.Context) error {
	return m.qmpRun(ctx, "pause", "stop")
}

// Resume implements vmm.Pauser with QMP's cont.
func (m *Machine) Resume(ctx context.Context) error {
	return m.qmpRun(ctx, "resume", "cont")
}

// qmpRun runs one argument-less QMP command on a connection of its own;
// op names it in errors.
func (m *Machine) qmpRun(ctx context.Context, op, cmd string) error {
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	q, err := dialQMP(filepath.Join(m.cfg.RuntimeDir, qmpSocket), timeout)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer q.Close()
	// execute has no context: a QMP that stops answering is cut off by
	// the connection's deadline, or by closing it when ctx ends first.
	q.conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { q.Close() })
	defer stop()
	if _, err := q.execute(cmd, nil); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}
