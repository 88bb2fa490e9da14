package cli

import (
	"sync"

	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/state"
)

// openImageStore opens the image store with InUse answered from the VM
// records and the snapshots: an image is in use while any VM record,
// running or not, names it (as podman refuses to remove an image a
// container uses), and while a snapshot does, since its clones boot from
// the image's disk.
func openImageStore(env *Env) (*image.Store, error) {
	s, err := image.Open(env.Dirs.Images(), env.Log)
	if err != nil {
		return nil, err
	}
	var once sync.Once
	var used map[string]bool
	var unknown bool
	s.InUse = func(id string) bool {
		once.Do(func() {
			used = map[string]bool{}
			st, err := state.Open(env.Dirs.VMs())
			if err != nil {
				unknown = true
				return
			}
			recs, err := st.List()
			if err != nil && recs == nil {
				unknown = true
			}
			for _, r := range recs {
				if r.ImageID != "" {
					used[r.ImageID] = true
				}
			}
			snaps, err := (&snapshot.Store{Dir: env.Dirs.Snapshots()}).List()
			if err != nil {
				unknown = true
			}
			for _, m := range snaps {
				if m.ImageID != "" {
					used[m.ImageID] = true
				}
			}
		})
		if unknown {
			env.Log.Warn("cannot read VM records or snapshots: keeping every image", "vms", env.Dirs.VMs(), "snapshots", env.Dirs.Snapshots())
			return true
		}
		return used[id]
	}
	return s, nil
}
