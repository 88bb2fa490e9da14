// Package storage makes the per-VM disks: a writable upper disk for every
// VM, created in milliseconds, and copy-on-write copies of disks and RAM
// files for snapshots and clones.
//
// An upper disk is a sparse ext4 file. Formatting one costs tens of
// milliseconds, so a formatted template is made once per size and each VM
// gets a copy of it: a reflink (FICLONE) where the data dir's filesystem
// supports it (btrfs, xfs), else a sparse copy of only the template's data
// extents (SEEK_DATA/SEEK_HOLE), a few MiB of metadata.
//
// # Concurrency
//
// Templates are made under a flock and renamed into place, so concurrent
// first runs of many VMs make one template and never see a partial one.
package storage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Store makes disks under a data dir.
type Store struct {
	// Dir holds templates.
	Dir string
}

// UpperDisk creates dst as a fresh, empty ext4 filesystem of sizeMiB.
func (s *Store) UpperDisk(ctx context.Context, dst string, sizeMiB int) error {
	tmpl, err := s.template(ctx, sizeMiB)
	if err != nil {
		return err
	}
	if err := Clone(tmpl, dst); err != nil {
		return fmt.Errorf("create upper disk %s: %w", dst, err)
	}
	return nil
}

func (s *Store) template(ctx context.Context, sizeMiB int) (string, error) {
	path := filepath.Join(s.Dir, fmt.Sprintf("upper-%dM.ext4", sizeMiB))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return "", fmt.Errorf("make template dir: %w", err)
	}
	unlock, err := lock(filepath.Join(s.Dir, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.Create(tmp)
	if err != nil {
		return "", fmt.Errorf("make upper template: %w", err)
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	f.Close()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("make upper template: %w", err)
	}
	// lazy init keeps the template small: the guest kernel initialises
	// inode tables in the background if it ever needs them.
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "fcvm-upper", "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("make upper template: mkfs.ext4: %w: %s (install e2fsprogs)", err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("make upper template: %w", err)
	}
	return path, nil
}
