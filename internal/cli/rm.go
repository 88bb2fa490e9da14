package cli

import (
	"context"
	"errors"
	"fmt"

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
	var errs []error
	for _, name := range o.names {
		if err := e.Remove(name, o.force); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(env.Stdout, name)
	}
	return errors.Join(errs...)
}
