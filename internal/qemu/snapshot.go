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

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/storage"
	"github.com/fcvm/fcvm/internal/vmm"
)

// Files of a snapshot directory.
const (
	// StateFile is the device state (the migration stream without RAM).
	StateFile = "vmstate"
	// MemFile is the copy of the guest's RAM file.
	MemFile = "mem.ram"
)

// memFile is the running VM's shared RAM file in its runtime dir (tmpfs
// for root), which a snapshot copies and clones map privately.
const memFile = "mem.ram"

var (
	_ vmm.Restorer    = (*Driver)(nil)
	_ vmm.Snapshotter = (*Machine)(nil)
)

// SnapshotSize implements vmm.Snapshotter: the RAM file's allocated size
// (the copy is a reflink where the filesystem allows, a sparse copy
// elsewhere).
func (m *Machine) SnapshotSize() (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(m.mem, &st); err != nil {
		return 0, fmt.Errorf("snapshot size: %w", err)
	}
	return st.Blocks * 512, nil
}

// Snapshot implements vmm.Snapshotter: it pauses the guest, writes the
// device state to dir/StateFile (RAM is skipped: it lives in the VM's
// shared memory file), copies the RAM file to dir/MemFile, calls
// whilePaused, and resumes the guest whatever happened.
func (m *Machine) Snapshot(ctx context.Context, dir string, whilePaused func() error) (_ string, err error) {
	if m.incoming {
		return "", errors.New("snapshot: this VM is a clone, whose RAM is a private mapping of its snapshot's: snapshot the original")
	}
	statePath := filepath.Join(dir, StateFile)
	if strings.ContainsAny(statePath, "'\"\\ ") {
		return "", fmt.Errorf("snapshot: state path %q has quotes or spaces", statePath)
	}
	q, err := dialQMP(filepath.Join(m.cfg.RuntimeDir, qmpSocket), 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("snapshot: %w", err)
	}
	defer q.Close()
	if _, err := q.execute("stop", nil); err != nil {
		return "", fmt.Errorf("snapshot: pause: %w", err)
	}
	defer func() {
		if _, cerr := q.execute("cont", nil); cerr != nil && err == nil {
			err = fmt.Errorf("snapshot: resume: %w", cerr)
		}
	}()
	if err := ignoreShared(q); err != nil {
		return "", err
	}
	if _, err := q.execute("migrate", map[string]any{"uri": "exec:cat > " + statePath}); err != nil {
		return "", fmt.Errorf("snapshot: save state: %w", err)
	}
	if err := waitMigration(ctx, q); err != nil {
		os.Remove(statePath)
		return "", fmt.Errorf("snapshot: save state: %w", err)
	}
	if err := storage.Clone(m.mem, filepath.Join(dir, MemFile)); err != nil {
		return "", fmt.Errorf("snapshot: copy memory: %w", err)
	}
	if whilePaused != nil {
		if err := whilePaused(); err != nil {
			return "", err
		}
	}
	return MemFile, nil
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
// migration, feeds it the state in ro.Dir, and resumes the guest. cfg must
// describe the same machine as the snapshot's (memory, vCPUs, devices). The
// clone maps the snapshot's RAM file privately, so clones share its page
// cache until they write; a memory server is not needed and is refused.
func (d *Driver) Restore(ctx context.Context, cfg vmm.Config, ro vmm.RestoreOptions) (vmm.Machine, error) {
	if ro.UffdSocket != "" {
		return nil, fmt.Errorf("restore: qemu clones map the snapshot's memory file: %w", vmm.ErrNoMemoryServer)
	}
	state := filepath.Join(ro.Dir, StateFile)
	if strings.ContainsAny(state, "'\"\\ ") {
		return nil, fmt.Errorf("restore: state path %q has quotes or spaces", state)
	}
	if ro.MemFile == "" {
		return nil, errors.New("restore: no memory file")
	}
	m, err := d.start(ctx, cfg, filepath.Join(ro.Dir, ro.MemFile), "defer")
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
