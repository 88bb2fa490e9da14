package engine

import (
	"fmt"
	"time"

	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// SnapshotInfo is a snapshot and how many live clones use it.
type SnapshotInfo struct {
	*snapshot.Manifest
	Clones int
}

// Snapshots lists every snapshot, sorted by tag.
func (e *Engine) Snapshots() ([]SnapshotInfo, error) {
	ms, err := (&snapshot.Store{Dir: e.dirs.Snapshots()}).List()
	if err != nil {
		return nil, err
	}
	out := make([]SnapshotInfo, 0, len(ms))
	for _, m := range ms {
		users, _ := supervisor.SnapshotUsers(e.dirs, m.Tag)
		out = append(out, SnapshotInfo{Manifest: m, Clones: len(users)})
	}
	return out, nil
}

// RemoveSnapshot deletes snapshot tag. One that live clones use is
// refused unless force, which kills them first.
func (e *Engine) RemoveSnapshot(tag string, force bool) error {
	users, err := supervisor.SnapshotUsers(e.dirs, tag)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		if !force {
			return fmt.Errorf("snapshot %s is in use by %d running clone(s) (%s...): stop them first or use -f", tag, len(users), users[0].Name)
		}
		for _, u := range users {
			if err := supervisor.Kill(u, 10*time.Second); err != nil {
				return fmt.Errorf("remove snapshot %s: stop clone %s: %w", tag, u.Name, err)
			}
		}
	}
	return (&snapshot.Store{Dir: e.dirs.Snapshots()}).Remove(tag)
}
