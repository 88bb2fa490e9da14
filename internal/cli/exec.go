package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
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
	store, err := state.Open(env.Dirs.VMs())
	if err != nil {
		return err
	}
	rec, err := store.Get(o.name)
	if err != nil {
		return err
	}
	if rec.Effective() != state.StatusRunning {
		return fmt.Errorf("VM %s is not running (%s): start a new one with fcvm run", o.name, rec.Effective())
	}
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
		if w, h, err := term.GetSize(int(stdinFile.Fd())); err == nil {
			o.Rows, o.Cols = uint16(h), uint16(w)
		}
	}
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindExec, Exec: &o.ExecRequest})
	if err != nil {
		return fmt.Errorf("exec in %s: %w", o.name, err)
	}
	defer conn.Close()
	var wmu sync.Mutex
	send := func(t channel.FrameType, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return channel.WriteFrame(conn, t, p)
	}
	if rawTTY {
		if old, err := term.MakeRaw(int(stdinFile.Fd())); err == nil {
			defer term.Restore(int(stdinFile.Fd()), old)
		}
		// Ctrl-C is a byte to the remote terminal now; SIGTERM or
		// SIGHUP (the terminal went away) end the session.
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(int(stdinFile.Fd())); err == nil {
					send(channel.FrameResize, channel.Resize(uint16(h), uint16(w)))
				}
			}
		}()
	} else {
		// Forward Ctrl-C and friends to the command, as podman does.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
		defer signal.Stop(sigs)
		go func() {
			for sig := range sigs {
				send(channel.FrameSignal, channel.Uint32(uint32(sig.(syscall.Signal))))
			}
		}()
	}
	if o.Stdin {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := env.Stdin.Read(buf)
				if n > 0 && send(channel.FrameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					send(channel.FrameStdinEOF, nil)
					return
				}
			}
		}()
	}
	code, err := copyExecOutput(conn, env.Stdout, env.Stderr)
	if err != nil {
		return fmt.Errorf("exec in %s: %w", o.name, err)
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

// copyExecOutput writes an exec stream's output frames until its exit
// frame. A stream that ends without one (guest died, channel reset) is an
// error, never a hang: the supervisor closes it.
func copyExecOutput(r io.Reader, stdout, stderr io.Writer) (int, error) {
	for {
		f, err := channel.ReadFrame(r)
		if err != nil {
			return 0, fmt.Errorf("connection to the VM lost before the command exited (see fcvm ls and fcvm logs): %w", err)
		}
		switch f.Type {
		case channel.FrameStdout:
			stdout.Write(f.Payload)
		case channel.FrameStderr:
			stderr.Write(f.Payload)
		case channel.FrameExit:
			code, err := channel.ParseUint32(f.Payload)
			return int(int32(code)), err
		case channel.FrameError:
			return 0, &channel.GuestError{Msg: string(f.Payload)}
		}
	}
}
