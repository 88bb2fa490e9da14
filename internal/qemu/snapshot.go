package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fcvm/fcvm/internal/vmm"
)

// StateFile is the device state inside a snapshot directory.
const StateFile = "vmstate"

var _ vmm.Restorer = (*Driver)(nil)

// Save snapshots the running QEMU whose runtime dir is runtimeDir: it
// pauses the guest, writes the device state to statePath (RAM is skipped:
// it lives in the VM's shared memory file), calls whilePaused (where the
// caller copies the memory file and disks, consistent with the state),
// and resumes the guest whatever happened.
func Save(ctx context.Context, runtimeDir, statePath string, whilePaused func() error) (err error) {
	q, err := dialQMP(filepath.Join(runtimeDir, qmpSocket), 5*time.Second)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer q.Close()
	if _, err := q.execute("stop", nil); err != nil {
		return fmt.Errorf("snapshot: pause: %w", err)
	}
	defer func() {
		if _, cerr := q.execute("cont", nil); cerr != nil && err == nil {
			err = fmt.Errorf("snapshot: resume: %w", cerr)
		}
	}()
	if err := ignoreShared(q); err != nil {
		return err
	}
	if strings.ContainsAny(statePath, "'\"\\ ") {
		return fmt.Errorf("snapshot: state path %q has quotes or spaces", statePath)
	}
	if _, err := q.execute("migrate", map[string]any{"uri": "exec:cat > " + statePath}); err != nil {
		return fmt.Errorf("snapshot: save state: %w", err)
	}
	if err := waitMigration(ctx, q); err != nil {
		os.Remove(statePath)
		return fmt.Errorf("snapshot: save state: %w", err)
	}
	if whilePaused != nil {
		return whilePaused()
	}
	return nil
}

func ignoreShared(q *qmp) error {
	_, err := q.execute("migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
	})
	if err != nil {
		return fmt.Errorf("snapshot: x-ignore-shared: %w", err)
	}
	return nil
}

// waitMigration polls until the migration in progress completes.
func waitMigration(ctx context.Context, q *qmp) error {
	for {
		raw, err := q.execute("query-migrate", nil)
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("decode query-migrate: %w", err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Restore implements vmm.Restorer: it starts QEMU waiting for an incoming
// migration, feeds it the state in dir, and resumes the guest. cfg must
// describe the same machine as the snapshot's (memory, vCPUs, devices), with
// cfg.MemoryFile the snapshot's RAM file, which the clone maps privately.
func (d *Driver) Restore(ctx context.Context, cfg vmm.Config, dir string) (vmm.Machine, error) {
	state := filepath.Join(dir, StateFile)
	if strings.ContainsAny(state, "'\"\\ ") {
		return nil, fmt.Errorf("restore: state path %q has quotes or spaces", state)
	}
	if cfg.MemoryFile == "" {
		return nil, errors.New("restore: no memory file")
	}
	m, err := d.start(ctx, cfg, "defer")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (vmm.Machine, error) {
		m.kill()
		return nil, fmt.Errorf("restore: %w: %s", err, m.stderr.tail())
	}
	q, err := dialQMP(filepath.Join(cfg.RuntimeDir, qmpSocket), 5*time.Second)
	if err != nil {
		return fail(err)
	}
	defer q.Close()
	if err := ignoreShared(q); err != nil {
		return fail(err)
	}
	if _, err := q.execute("migrate-incoming", map[string]any{"uri": "exec:cat " + state}); err != nil {
		return fail(err)
	}
	if err := waitMigration(ctx, q); err != nil {
		return fail(err)
	}
	// The guest runs once the incoming migration is done unless QEMU
	// was told otherwise; cont makes sure either way.
	q.execute("cont", nil)
	return m, nil
}
