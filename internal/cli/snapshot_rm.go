package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

func newSnapshotRmCmd(env *Env) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] TAG...",
		Short: "Remove snapshots",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSnapshotRm(cmd.Context(), env, args, force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even while clones use it (they are stopped)")
	return cmd
}

func runSnapshotRm(_ context.Context, env *Env, tags []string, force bool) error {
	e := env.engine()
	for _, tag := range tags {
		if err := e.RemoveSnapshot(tag, force); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, tag)
	}
	return nil
}
