package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/state"
)

func newWaitCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "wait NAME|ID...",
		Short: "Wait for VMs to exit and print their exit codes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runWait(cmd.Context(), env, args)
		},
	}
}

func runWait(ctx context.Context, env *Env, names []string) error {
	store, err := state.Open(env.Dirs.VMs())
	if err != nil {
		return err
	}
	for _, name := range names {
		rec, err := store.Get(name)
		if err != nil {
			return err
		}
		for rec.Effective().Live() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			if rec, err = store.Get(rec.ID); err != nil {
				return err
			}
		}
		code := -1
		if rec.ExitCode != nil {
			code = *rec.ExitCode
		}
		fmt.Fprintln(env.Stdout, code)
	}
	return nil
}
