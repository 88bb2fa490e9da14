package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fcvm/fcvm/internal/channel"
)

type execOptions struct {
	channel.ExecRequest
	interactive bool
	name        string
}

func newExecCmd(env *Env) *cobra.Command {
	o := &execOptions{}
	cmd := &cobra.Command{
		Use:   "exec [flags] NAME COMMAND [ARG...]",
		Short: "Run a command in a running VM's container",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name, o.Cmd = args[0], args[1:]
			return runExec(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVarP(&o.interactive, "interactive", "i", false, "keep stdin open")
	f.BoolVarP(&o.TTY, "tty", "t", false, "allocate a terminal")
	f.StringArrayVarP(&o.Env, "env", "e", nil, "set an environment variable")
	f.StringVarP(&o.Workdir, "workdir", "w", "", "working directory")
	f.StringVarP(&o.User, "user", "u", "", "user to run as")
	f.BoolVarP(&o.Detach, "detach", "d", false, "run in the background")
	f.BoolVar(&o.InVM, "vm", false, "run in the VM, outside the container")
	return cmd
}

func runExec(ctx context.Context, env *Env, o *execOptions) error {
	var err error
	if o.Env, err = parseEnv(o.Env, nil); err != nil {
		return err
	}
	o.Stdin = o.interactive
	stdinFile, _ := env.Stdin.(*os.File)
	// As podman exec: -t without a terminal on stdin still gives the
	// command a terminal (its output then has CRLF line ends), silently;
	// only this side's raw mode and resizing need a real one.
	rawTTY := o.TTY && stdinFile != nil && term.IsTerminal(int(stdinFile.Fd()))
	if rawTTY {
		o.Rows, o.Cols, _ = terminalSize(stdinFile)
	}
	x, err := env.engine().Exec(ctx, o.name, o.ExecRequest)
	if err != nil {
		return err
	}
	defer x.Close()
	if rawTTY {
		defer rawTerminal(stdinFile)()
		// Ctrl-C is a byte to the remote terminal now; SIGTERM or
		// SIGHUP (the terminal went away) end the session.
		stop := context.AfterFunc(ctx, func() { x.Close() })
		defer stop()
		defer followSize(stdinFile, func(rows, cols uint16) { x.Resize(rows, cols) })()
	} else {
		// Forward Ctrl-C and friends to the command, as podman does.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
		defer signal.Stop(sigs)
		go func() {
			for sig := range sigs {
				x.Signal(sig.(syscall.Signal))
			}
		}()
	}
	if o.Stdin {
		x.Stdin(env.Stdin)
	}
	code, err := x.Wait(env.Stdout, env.Stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
