package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
)

type rmOptions struct {
	force bool
	names []string
}

func newRmCmd(env *Env) *cobra.Command {
	o := &rmOptions{}
	cmd := &cobra.Command{
		Use:   "rm [-f] NAME|ID...",
		Short: "Remove VMs, their disks and records",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			return runRm(cmd.Context(), env, o)
		},
	}
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "stop running VMs first")
	return cmd
}

func runRm(ctx context.Context, env *Env, o *rmOptions) error {
	store, err := state.Open(env.Dirs.VMs())
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range o.names {
		if err := removeVM(store, name, o.force); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(env.Stdout, name)
	}
	return errors.Join(errs...)
}

func removeVM(store *state.Store, name string, force bool) error {
	r, err := store.Get(name)
	if err != nil {
		return err
	}
	if r.Effective().Live() {
		if !force {
			return fmt.Errorf("VM %s is running: stop it first with `fcvm stop %s`, or use `fcvm rm -f`", name, name)
		}
		if err := supervisor.Kill(r, 10*time.Second); err != nil {
			return err
		}
	} else if err := supervisor.Reclaim(r); err != nil {
		return err
	}
	return store.Remove(r.ID)
}
