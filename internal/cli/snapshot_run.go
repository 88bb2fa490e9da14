package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/supervisor"
)

type snapshotRunOptions struct {
	supervisor.CloneOptions
	servePID int
	labels   []string
}

func newSnapshotRunCmd(env *Env) *cobra.Command {
	o := &snapshotRunOptions{}
	cmd := &cobra.Command{
		Use:   "run TAG|--serve PID [--name NAME] [-d] [--memory-backend file|uffd]",
		Short: "Start a clone of a snapshot",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Tag = args[0]
			}
			return runSnapshotRun(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "", "name of the clone")
	f.BoolVarP(&o.Detach, "detach", "d", false, "run in the background and print the clone's ID")
	f.BoolVar(&o.Remove, "rm", false, "remove the clone when it exits")
	f.StringVar(&o.VMM, "vmm", "", "VMM (must be the snapshot's)")
	f.StringArrayVarP(&o.Publish, "publish", "p", nil, "publish a guest port of the clone: [IP:]HOSTPORT:GUESTPORT[/tcp|/udp]")
	f.StringArrayVarP(&o.labels, "label", "l", nil, "set a label on the clone's record (K=V)")
	f.IntVar(&o.servePID, "serve", 0, "clone through the memory server with this PID (Firecracker)")
	f.StringVar(&o.MemoryBackend, "memory-backend", "", "Firecracker clone memory: file (map the snapshot's memory file privately) or uffd (the --serve memory server); default uffd with --serve, else file")
	return cmd
}

func runSnapshotRun(ctx context.Context, env *Env, o *snapshotRunOptions) error {
	if o.servePID != 0 {
		srv, err := supervisor.FindServe(env.Dirs, o.servePID)
		if err != nil {
			return err
		}
		if o.Tag != "" && o.Tag != srv.Tag {
			return fmt.Errorf("--serve %d serves snapshot %s, not %s: give only --serve PID", o.servePID, srv.Tag, o.Tag)
		}
		o.Tag, o.ServePID = srv.Tag, o.servePID
	}
	if o.Tag == "" {
		return errors.New("give a snapshot TAG (see fcvm snapshot ls)")
	}
	var err error
	if o.Labels, err = parseLabels(o.labels); err != nil {
		return err
	}
	launch := func() (*supervisor.VM, error) { return env.engine().LaunchClone(ctx, o.CloneOptions) }
	if o.Detach {
		return runDetached(ctx, env, launch, false, o.Remove, nil)
	}
	vm, err := launch()
	if err != nil {
		return err
	}
	for _, p := range vm.Phases {
		env.Log.Debug("clone phase", "phase", p.Name, "took", p.Dur)
	}
	code, runErr := vm.Run(ctx, supervisor.Stdio{Stdout: env.Stdout, Stderr: env.Stderr}, nil)
	return finishRun(env, vm, o.Remove, code, runErr)
}
