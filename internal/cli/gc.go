package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

func newGCCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Reclaim what dead supervisors left behind",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGC(cmd.Context(), env)
		},
	}
}

func runGC(_ context.Context, env *Env) error {
	reclaimed, err := env.engine().GC()
	for _, r := range reclaimed {
		fmt.Fprintf(env.Stdout, "reclaimed %s (%s)\n", r.Name, r.ShortID())
	}
	return err
}
