package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/engine"
)

type attachOptions struct {
	noStdin bool
	name    string
}

func newAttachCmd(env *Env) *cobra.Command {
	o := &attachOptions{}
	cmd := &cobra.Command{
		Use:   "attach [--no-stdin] NAME|ID",
		Short: "Stream a running container's output (and your input to it) until it exits",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			return runAttach(cmd.Context(), env, o)
		},
	}
	cmd.Flags().BoolVar(&o.noStdin, "no-stdin", false, "do not send input to the container")
	return cmd
}

// runAttach exits with the container's code, as podman's attach does;
// Ctrl-C detaches and leaves the VM running.
func runAttach(ctx context.Context, env *Env, o *attachOptions) error {
	ao := engine.AttachOptions{Stdout: env.Stdout, Stderr: env.Stderr}
	if !o.noStdin {
		ao.Stdin = env.Stdin
	}
	code, err := env.engine().Attach(ctx, o.name, ao)
	if err != nil {
		return err
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
