package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/supervisor"
)

type startOptions struct {
	attach      bool
	interactive bool
	names       []string
}

func newStartCmd(env *Env) *cobra.Command {
	o := &startOptions{}
	cmd := &cobra.Command{
		Use:   "start [-a [-i]] NAME|ID...",
		Short: "Boot stopped VMs again: same name, ports, volumes and disk, a new guest boot",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			return runStart(cmd.Context(), env, o)
		},
	}
	cmd.Flags().BoolVarP(&o.attach, "attach", "a", false, "stay in the foreground: stream the container's output and exit with its code")
	cmd.Flags().BoolVarP(&o.interactive, "interactive", "i", false, "with -a: send stdin to the container (run with -i)")
	return cmd
}

func runStart(ctx context.Context, env *Env, o *startOptions) error {
	if o.interactive && !o.attach {
		return errors.New("start -i: needs -a (stdin goes to an attached container)")
	}
	if o.attach {
		if len(o.names) != 1 {
			return errors.New("start -a: give one VM (podman attaches to one container)")
		}
		vm, err := env.engine().Start(ctx, o.names[0], false)
		if err != nil {
			return err
		}
		for _, p := range vm.Phases {
			env.Log.Debug("launch phase", "phase", p.Name, "took", p.Dur)
		}
		stdio := supervisor.Stdio{Stdout: env.Stdout, Stderr: env.Stderr}
		if o.interactive {
			stdio.Stdin = env.Stdin
		}
		code, runErr := vm.Run(ctx, stdio, nil)
		return finishRun(env, vm, vm.Record.AutoRemove, code, runErr)
	}
	if supervisor.IsDetachedSupervisor() {
		// The background supervisor of one VM, started below.
		return superviseStart(ctx, env, o.names[0])
	}
	return eachVM(env, o.names, func(name string) error { return startDetached(ctx, env, name) })
}

// startDetached leaves a supervisor behind for the stopped VM name and
// returns once its container runs.
func startDetached(ctx context.Context, env *Env, name string) error {
	// Refuse what cannot start here, where the user sees the error at
	// once (the supervisor would report it too, later).
	if rec, err := env.engine().Inspect(name); err != nil {
		return err
	} else if s := rec.Effective(); s.Live() {
		return fmt.Errorf("start %s: the VM is %s: stop it first with fcvm stop %s, or use fcvm restart", name, s, name)
	}
	_, err := supervisor.StartDetachedArgs(ctx, []string{"start", "--log-level", env.logLevel, "--", name})
	return err
}

// superviseStart is the background supervisor startDetached leaves.
func superviseStart(ctx context.Context, env *Env, name string) error {
	moveLog := func(dir string) error { return env.logToDir(dir, 2) }
	launch := func() (*supervisor.VM, error) { return env.engine().Start(ctx, name, true) }
	vm, code, runErr := supervisor.RunDetached(ctx, launch, moveLog, false)
	if vm == nil {
		return runErr
	}
	return superviseRestarts(ctx, env, vm, vm.Record.AutoRemove, code, runErr)
}
