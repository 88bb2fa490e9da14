// Package cli is the fcvm command line: one file per verb, each with its
// options in its own struct and a runX(ctx, opts) function that writes to
// the injectable writers in Env.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/termsafe"
)

// Env is what every command gets from its caller.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Log    *slog.Logger
	Dirs   datadir.Dirs

	// logOut is where Log writes (supervisor_log.go).
	logOut *logOutput
	// logLevel is --log-level, passed on to supervisors fcvm starts.
	logLevel string
}

// ExitError carries an exit code other than 1 (a container's exit status)
// out of a command without printing anything more.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Run parses args and runs the command they name. It returns the process
// exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := &Env{Stdin: stdin, Stdout: stdout, Stderr: stderr, logOut: &logOutput{w: stderr}}
	var logLevel string
	root := &cobra.Command{
		Use:           "fcvm",
		Short:         "Run OCI containers in microVMs, and clone warm VMs in milliseconds",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("parse --log-level %q: %w", logLevel, err)
			}
			env.Log = slog.New(slog.NewTextHandler(env.logOut, &slog.HandlerOptions{Level: lvl}))
			env.logLevel = logLevel
			dirs, err := datadir.Default()
			if err != nil {
				return err
			}
			env.Dirs = dirs
			return nil
		},
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", envOr("FCVM_LOG_LEVEL", "warn"), "log level: debug, info, warn, error")
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmds := commands(env)
	addVMCompletion(env, cmds) // completion.go
	root.AddCommand(cmds...)

	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	// Errors carry text from the guest (its refusals, its console) and
	// from files the user did not write: the terminal must show it, not
	// obey it.
	fmt.Fprintf(stderr, "fcvm: %s\n", termsafe.String(err.Error()))
	return 125
}

// commands lists every verb. Keep it sorted.
func commands(env *Env) []*cobra.Command {
	return []*cobra.Command{
		newAttachCmd(env),
		newCpCmd(env),
		newDoctorCmd(env),
		newExecCmd(env),
		newGCCmd(env),
		newImageCmd(env),
		newRunCmd(env),
		newServeCmd(env),
		newInspectCmd(env),
		newKillCmd(env),
		newLogsCmd(env),
		newLsCmd(env),
		newPauseCmd(env),
		newPodmanCmd(env),
		newPortCmd(env),
		newRenameCmd(env),
		newRestartCmd(env),
		newRmCmd(env),
		newSetupCmd(env),
		newSnapshotCmd(env),
		newStartCmd(env),
		newStatsCmd(env),
		newStopCmd(env),
		newTopCmd(env),
		newUnpauseCmd(env),
		newWaitCmd(env),
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
