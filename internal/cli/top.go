package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/termsafe"
)

type topOptions struct {
	name        string
	descriptors []string
}

func newTopCmd(env *Env) *cobra.Command {
	o := &topOptions{}
	cmd := &cobra.Command{
		Use:   "top NAME|ID",
		Short: "Show the processes of a VM's container, in podman top's columns",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name, o.descriptors = args[0], args[1:]
			return runTop(cmd.Context(), env, o)
		},
	}
	return cmd
}

func runTop(ctx context.Context, env *Env, o *topOptions) error {
	if len(o.descriptors) > 0 {
		return errors.New("top: format descriptors are not supported: fcvm top shows podman's default columns")
	}
	procs, err := env.engine().Top(ctx, o.name)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "USER\tPID\tPPID\t%CPU\tELAPSED\tTTY\tTIME\tCOMMAND")
	for _, p := range procs {
		// The guest wrote every string here: escape what a terminal
		// would act on.
		user := termsafe.String(p.User)
		if user == "" {
			user = strconv.Itoa(p.UID)
		}
		tty := p.TTY
		if tty == "" {
			tty = "?"
		}
		pcpu := 0.0
		if p.Elapsed > 0 {
			pcpu = p.CPU / p.Elapsed * 100
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%s\t%s\t%s\t%s\n", user, p.PID, p.PPID, pcpu,
			time.Duration(p.Elapsed*float64(time.Second)), termsafe.String(tty), time.Duration(p.CPU*float64(time.Second)), termsafe.String(p.Args))
	}
	return tw.Flush()
}
