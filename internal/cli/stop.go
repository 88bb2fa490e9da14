package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

type stopOptions struct {
	timeout int // seconds; < 0: the VM's --stop-timeout
	names   []string
}

func newStopCmd(env *Env) *cobra.Command {
	return newStopLikeCmd(env, "stop", "Stop running VMs: SIGTERM (or the VM's --stop-signal) to the container, then power off", runStop)
}

// newStopLikeCmd is stop's command line, which restart shares.
func newStopLikeCmd(env *Env, verb, short string, run func(context.Context, *Env, *stopOptions) error) *cobra.Command {
	o := &stopOptions{}
	cmd := &cobra.Command{
		Use:   verb + " [-t SECONDS] NAME|ID...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			if !cmd.Flags().Changed("time") {
				o.timeout = -1
			}
			return run(cmd.Context(), env, o)
		},
	}
	cmd.Flags().IntVarP(&o.timeout, "time", "t", 10, "seconds to wait for the container to exit before killing it (default: the VM's --stop-timeout, else 10)")
	return cmd
}

func runStop(ctx context.Context, env *Env, o *stopOptions) error {
	e := env.engine()
	return eachVM(env, o.names, func(name string) error {
		return e.Stop(ctx, name, stopGrace(env, name, o.timeout))
	})
}

// eachVM runs fn for each name, printing the names it succeeded for, as
// podman's verbs on several containers do, and returns the errors of the
// others.
func eachVM(env *Env, names []string, fn func(name string) error) error {
	var errs []error
	for _, name := range names {
		if err := fn(name); err != nil {
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
