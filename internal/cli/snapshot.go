package cli

import "github.com/spf13/cobra"

func newSnapshotCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Create, serve, list, remove and clone snapshots",
	}
	cmd.AddCommand(
		// one constructor per subcommand, each in its own snapshot_*.go file
		newSnapshotCreateCmd(env),
		newSnapshotLsCmd(env),
		newSnapshotRmCmd(env),
		newSnapshotRunCmd(env),
		newSnapshotServeCmd(env),
	)
	return cmd
}
