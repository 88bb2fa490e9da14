package engine

import (
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// GC reclaims what dead supervisors left behind (VMM, network, runtime
// dir), marks their VMs exited (or removes them, for --rm VMs), removes
// runtime dirs no record names, and sweeps the record store. It returns
// the VMs it reclaimed; errors of single VMs do not stop it.
func (e *Engine) GC() ([]*state.Record, error) {
	store, err := e.store()
	if err != nil {
		return nil, err
	}
	recs, listErr := store.List()
	var errs []error
	if listErr != nil {
		errs = append(errs, listErr)
	}
	var reclaimed []*state.Record
	live := map[string]bool{}
	for _, r := range recs {
		if r.Effective() != state.StatusDead {
			if r.RuntimeDir != "" {
				live[filepath.Base(r.RuntimeDir)] = true
			}
			continue
		}
		if err := supervisor.Reclaim(r); err != nil {
			errs = append(errs, err)
			continue
		}
		if r.AutoRemove {
			if err := store.Remove(r.ID); err != nil {
				errs = append(errs, err)
			}
		} else {
			store.Update(r.ID, func(r *state.Record) error {
				r.Status = state.StatusExited
				r.Finished = time.Now()
				if r.Error == "" {
					r.Error = "supervisor died"
				}
				return nil
			})
		}
		reclaimed = append(reclaimed, r)
	}
	// Runtime dirs of VMs that have no record at all.
	if ents, err := os.ReadDir(e.dirs.Runtime); err == nil {
		for _, ent := range ents {
			if !live[ent.Name()] && ent.IsDir() && len(ent.Name()) == 12 {
				if _, err := store.Get(ent.Name()); err != nil {
					os.RemoveAll(filepath.Join(e.dirs.Runtime, ent.Name()))
				}
			}
		}
	}
	if err := store.Sweep(); err != nil {
		errs = append(errs, err)
	}
	return reclaimed, errors.Join(errs...)
}
