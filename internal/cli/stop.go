package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
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
			return runStop(cmd.Context(), env, o)
		},
	}
	cmd.Flags().IntVarP(&o.timeout, "time", "t", 10, "seconds to wait for the container to exit before killing it")
	return cmd
}

func runStop(ctx context.Context, env *Env, o *stopOptions) error {
	store, err := state.Open(env.Dirs.VMs())
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range o.names {
		if err := stopVM(ctx, store, name, o.timeout); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(env.Stdout, name)
	}
	return errors.Join(errs...)
}

func stopVM(ctx context.Context, store *state.Store, name string, timeout int) error {
	rec, err := store.Get(name)
	if err != nil {
		return err
	}
	switch rec.Effective() {
	case state.StatusExited, state.StatusCreated:
		return nil // as podman: stopping a stopped VM succeeds
	case state.StatusDead:
		return supervisor.Reclaim(rec)
	}
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: supervisor.KindStop, Signal: timeout})
	if err != nil {
		// The supervisor cannot be reached: end it the hard way.
		return supervisor.Kill(rec, time.Duration(timeout)*time.Second)
	}
	conn.Close()
	// Return once the supervisor has cleaned up.
	deadline := time.Now().Add(time.Duration(timeout)*time.Second + 30*time.Second)
	for {
		r, err := store.Get(rec.ID)
		if err != nil || !r.Effective().Live() {
			return nil
		}
		if time.Now().After(deadline) {
			return supervisor.Kill(r, 5*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
