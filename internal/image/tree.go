package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"time"
)

// FromTree returns the image whose disk holds the directory tree root,
// building the disk unless one was built for the same key. The key must
// change whenever the tree's content may have (the containerd shim keys
// a rootfs by its chain of layer snapshots). Such an image has no
// configuration and no name: its caller says what to run, and `fcvm
// image prune` reclaims it once nothing uses it.
//
// root is only read (mkfs.ext4 -d copies it, owners and modes kept), so it
// may be a read-only mount; that is also why the mount points an extracted
// image gets are not added: a rootfs without /proc is the caller's to fix.
func (s *Store) FromTree(ctx context.Context, key, root string) (*Image, error) {
	sum := sha256.Sum256([]byte("tree\x00" + key))
	id := "sha256:" + hex.EncodeToString(sum[:])
	if img, err := s.load(id, nil); err == nil {
		return img, nil
	}
	lock, err := lockFile(ctx, filepath.Join(s.dir, "locks", hexOf(id)))
	if err != nil {
		return nil, err
	}
	defer lock.unlock(true)
	if img, err := s.load(id, nil); err == nil {
		return img, nil
	}
	tmp, release, err := s.tempDir(hexOf(id)[:12])
	if err != nil {
		return nil, err
	}
	defer release()
	t0 := time.Now()
	size, err := mkfs(ctx, root, filepath.Join(tmp, diskFile), "fcvm-"+hexOf(id)[:11])
	if err != nil {
		return nil, fmt.Errorf("build disk of %s: %w", root, err)
	}
	now := time.Now().UTC()
	if err := s.commit(tmp, record{ID: id, Size: size, Created: now, Pulled: now}); err != nil {
		return nil, err
	}
	s.log.Debug("tree disk built", "id", id, "root", root, "mkfs", time.Since(t0), "disk", size)
	return s.load(id, nil)
}
