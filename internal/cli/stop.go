package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

type stopOptions struct {
	timeout int
	names   []string
}

func newStopCmd(env *Env) *cobra.Command {
	o := &stopOptions{}
	cmd := &cobra.Command{
		Use:   "stop [-t SECONDS] NAME|ID...",
		Short: "Stop running VMs: SIGTERM to the container, then power off",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			if !cmd.Flags().Changed("time") {
				o.timeout = -1
			}
			return runStop(cmd.Context(), env, o)
		},
	}
	cmd.Flags().IntVarP(&o.timeout, "time", "t", 10, "seconds to wait for the container to exit before killing it (default: the VM's --stop-timeout)")
	return cmd
}

func runStop(ctx context.Context, env *Env, o *stopOptions) error {
	e := env.engine()
	var errs []error
	for _, name := range o.names {
		if err := e.Stop(ctx, name, stopGrace(env, name, o.timeout)); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(env.Stdout, name)
	}
	return errors.Join(errs...)
}
