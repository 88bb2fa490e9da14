package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
)

func newGCCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Reclaim what dead supervisors left behind",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGC(cmd.Context(), env)
		},
	}
}

func runGC(_ context.Context, env *Env) error {
	store, err := state.Open(env.Dirs.VMs())
	if err != nil {
		return err
	}
	recs, listErr := store.List()
	var errs []error
	if listErr != nil {
		errs = append(errs, listErr)
	}
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
		fmt.Fprintf(env.Stdout, "reclaimed %s (%s)\n", r.Name, r.ShortID())
	}
	// Runtime dirs of VMs that have no record at all.
	if ents, err := os.ReadDir(env.Dirs.Runtime); err == nil {
		for _, e := range ents {
			if !live[e.Name()] && e.IsDir() && len(e.Name()) == 12 {
				if _, err := store.Get(e.Name()); err != nil {
					os.RemoveAll(filepath.Join(env.Dirs.Runtime, e.Name()))
				}
			}
		}
	}
	if err := store.Sweep(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
