package cli

import "github.com/spf13/cobra"

type renameOptions struct {
	old, new string
}

func newRenameCmd(env *Env) *cobra.Command {
	o := &renameOptions{}
	return &cobra.Command{
		Use:   "rename NAME|ID NEWNAME",
		Short: "Rename a VM, running or not",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.old, o.new = args[0], args[1]
			return runRename(env, o)
		},
	}
}

// runRename prints nothing on success, as podman's rename.
func runRename(env *Env, o *renameOptions) error {
	return env.engine().Rename(o.old, o.new)
}
