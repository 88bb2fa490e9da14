package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

type restartOptions struct {
	timeout int
	names   []string
}

func newRestartCmd(env *Env) *cobra.Command {
	o := &restartOptions{}
	cmd := &cobra.Command{
		Use:   "restart [-t SECONDS] NAME|ID...",
		Short: "Stop VMs (if running) and boot them again",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			if !cmd.Flags().Changed("time") {
				o.timeout = -1
			}
			return runRestart(cmd.Context(), env, o)
		},
	}
	cmd.Flags().IntVarP(&o.timeout, "time", "t", 10, "seconds to wait for the container to exit before killing it (default: the VM's --stop-timeout)")
	return cmd
}

func runRestart(ctx context.Context, env *Env, o *restartOptions) error {
	e := env.engine()
	var errs []error
	for _, name := range o.names {
		if err := e.Stop(ctx, name, stopGrace(env, name, o.timeout)); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := startDetached(ctx, env, name); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(env.Stdout, name)
	}
	return errors.Join(errs...)
}

// stopGrace is -t in seconds, or when not given (< 0) the VM's own stop
// timeout (run --stop-timeout), else podman's 10 s.
func stopGrace(env *Env, name string, secs int) time.Duration {
	if secs < 0 {
		secs = 10
		if rec, err := env.engine().Inspect(name); err == nil && rec.StopTimeout != nil {
			secs = *rec.StopTimeout
		}
	}
	return time.Duration(secs) * time.Second
}
