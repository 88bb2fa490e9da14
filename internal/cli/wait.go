package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
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
	e := env.engine()
	for _, name := range names {
		code, err := e.Wait(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, code)
	}
	return nil
}
