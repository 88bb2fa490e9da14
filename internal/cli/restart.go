package cli

import (
	"context"

	"github.com/spf13/cobra"
)

func newRestartCmd(env *Env) *cobra.Command {
	return newStopLikeCmd(env, "restart", "Stop VMs (if running) and boot them again", runRestart)
}

func runRestart(ctx context.Context, env *Env, o *stopOptions) error {
	e := env.engine()
	return eachVM(env, o.names, func(name string) error {
		if err := e.Stop(ctx, name, stopGrace(env, name, o.timeout)); err != nil {
			return err
		}
		return startDetached(ctx, env, name)
	})
}
