package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newPodmanCmd is `fcvm podman VERB`, the original system's spelling: the
// verbs podman has, as the same commands (flags, output, exit codes) as
// `fcvm VERB`. fcvm's own verbs (setup, snapshot, serve, gc) are left out.
func newPodmanCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "podman VERB [ARG...]",
		Short: "podman's verbs under podman's spelling: fcvm podman run is fcvm run",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return fmt.Errorf("podman %s: fcvm has no such podman verb: see fcvm podman --help", args[0])
		},
	}
	verbs := []*cobra.Command{
		newAttachCmd(env),
		newCpCmd(env),
		newExecCmd(env),
		newImageCmd(env),
		newInspectCmd(env),
		newKillCmd(env),
		newLogsCmd(env),
		newLsCmd(env),
		newPauseCmd(env),
		newPortCmd(env),
		newRenameCmd(env),
		newRestartCmd(env),
		newRmCmd(env),
		newRunCmd(env),
		newStartCmd(env),
		newStatsCmd(env),
		newStopCmd(env),
		newTopCmd(env),
		newUnpauseCmd(env),
		newWaitCmd(env),
	}
	addVMCompletion(env, verbs)
	cmd.AddCommand(verbs...)
	return cmd
}
