package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

type killOptions struct {
	signal string
	names  []string
}

func newKillCmd(env *Env) *cobra.Command {
	o := &killOptions{}
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] NAME|ID...",
		Short: "Send a signal to the container's main process (SIGKILL by default)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			return runKill(cmd.Context(), env, o)
		},
	}
	cmd.Flags().StringVarP(&o.signal, "signal", "s", "KILL", "signal to send: a name (KILL, SIGTERM, term) or a number")
	return cmd
}

func runKill(ctx context.Context, env *Env, o *killOptions) error {
	sig, err := parseSignal(o.signal)
	if err != nil {
		return err
	}
	e := env.engine()
	return eachVM(env, o.names, func(name string) error { return e.Kill(ctx, name, sig) })
}

// parseSignal reads a signal as podman does: a name with or without SIG,
// in any case, or a number from 1 to 64.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 64 {
			return 0, fmt.Errorf("parse signal %q: out of range 1-64: give a signal name or number, as in kill -l", s)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("parse signal %q: unknown signal: give a signal name or number, as in kill -l", s)
}
