package cli

import (
	"context"

	"github.com/spf13/cobra"
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

func runRm(_ context.Context, env *Env, o *rmOptions) error {
	e := env.engine()
	return eachVM(env, o.names, func(name string) error { return e.Remove(name, o.force) }) // stop.go
}
