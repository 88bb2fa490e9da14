package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/supervisor"
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
	snaps := &snapshot.Store{Dir: env.Dirs.Snapshots()}
	for _, tag := range tags {
		users, err := supervisor.SnapshotUsers(env.Dirs, tag)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			if !force {
				return fmt.Errorf("snapshot %s is in use by %d running clone(s) (%s...): stop them first or use -f", tag, len(users), users[0].Name)
			}
			for _, u := range users {
				supervisor.Kill(u, 10*time.Second)
			}
		}
		if err := snaps.Remove(tag); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, tag)
	}
	return nil
}
