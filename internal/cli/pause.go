package cli

import (
	"context"

	"github.com/spf13/cobra"
)

type pauseOptions struct {
	// unpause thaws instead of freezing.
	unpause bool
	names   []string
}

func newPauseCmd(env *Env) *cobra.Command {
	o := &pauseOptions{}
	return &cobra.Command{
		Use:   "pause NAME|ID...",
		Short: "Freeze running VMs: the VMM stops their vCPUs until unpause",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			return runPause(cmd.Context(), env, o)
		},
	}
}

func newUnpauseCmd(env *Env) *cobra.Command {
	o := &pauseOptions{unpause: true}
	return &cobra.Command{
		Use:   "unpause NAME|ID...",
		Short: "Thaw paused VMs",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			return runPause(cmd.Context(), env, o)
		},
	}
}

// runPause prints each name it paused or unpaused, as podman does.
func runPause(ctx context.Context, env *Env, o *pauseOptions) error {
	e := env.engine()
	op := e.Pause
	if o.unpause {
		op = e.Unpause
	}
	return eachVM(env, o.names, func(name string) error { return op(ctx, name) }) // stop.go
}
