package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

type snapshotCreateOptions struct {
	name string
	pid  int
	tag  string
}

func newSnapshotCreateCmd(env *Env) *cobra.Command {
	o := &snapshotCreateOptions{}
	cmd := &cobra.Command{
		Use:   "create NAME|--pid PID --tag TAG",
		Short: "Snapshot a running VM; it keeps running",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.name = args[0]
			}
			return runSnapshotCreate(cmd.Context(), env, o)
		},
	}
	cmd.Flags().StringVar(&o.tag, "tag", "", "name of the snapshot (required)")
	cmd.Flags().IntVar(&o.pid, "pid", 0, "the VM's supervisor PID instead of its name")
	return cmd
}

func runSnapshotCreate(ctx context.Context, env *Env, o *snapshotCreateOptions) error {
	if o.tag == "" {
		return errors.New("--tag is required: name the snapshot")
	}
	if (o.name == "") == (o.pid == 0) {
		return errors.New("give either a VM NAME or --pid PID")
	}
	e := env.engine()
	if o.pid != 0 {
		recs, err := e.List()
		if err != nil && len(recs) == 0 {
			return err
		}
		for _, r := range recs {
			if r.Supervisor.PID == o.pid && r.Effective().Live() {
				o.name = r.ID
			}
		}
		if o.name == "" {
			return fmt.Errorf("no running VM has supervisor PID %d (see fcvm ls)", o.pid)
		}
	}
	m, err := e.Snapshot(ctx, o.name, o.tag)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, m.Tag)
	return nil
}
