package firecracker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// APISocket is the name of the API socket in a VM's RuntimeDir (outside a
// jail).
const APISocket = apiSocketName

// SnapshotSocket snapshots the VM whose API socket is socket, from a
// process that did not start it (the machine's owner keeps its *Machine):
// it pauses the VM, writes SnapshotStateFile and SnapshotMemFile into dir,
// runs paused (when non-nil) while the VM is still paused, so that its
// disks can be copied consistently, and resumes the VM even when a step
// failed. It does not work for a jailed Firecracker, whose paths are
// relative to its jail.
func SnapshotSocket(ctx context.Context, socket, dir string, typ SnapshotType, paused func() error) error {
	if typ == "" {
		typ = SnapshotFull
	}
	reqs := snapshotRequests(filepath.Join(dir, SnapshotStateFile), filepath.Join(dir, SnapshotMemFile), typ)
	c := NewClient(socket)
	defer c.Close()
	if err := c.Do(ctx, reqs[0], nil); err != nil {
		return fmt.Errorf("snapshot %s: %w", dir, err)
	}
	err := c.Do(ctx, reqs[1], nil)
	if err == nil && paused != nil {
		err = paused()
	}
	// The VM must not stay paused because the caller's ctx ran out.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if rerr := c.Do(rctx, reqs[2], nil); rerr != nil {
		err = errors.Join(err, fmt.Errorf("resume: %w", rerr))
	}
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", dir, err)
	}
	return nil
}
