package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/doctor"
)

type doctorOptions struct {
	json bool
}

func newDoctorCmd(env *Env) *cobra.Command {
	var o doctorOptions
	cmd := &cobra.Command{
		Use:   "doctor [--json]",
		Short: "Show what this host can and cannot do, and how to fix it",
		Long: `Check what fcvm needs on this host: KVM, the firecracker binary, QEMU,
userfaultfd, reflinks in the data dir, pasta or slirp4netns, nftables, FUSE,
root, the tools fcvm setup uses, and the guest artifacts. Each missing piece
comes with the command that fixes it.

doctor only looks; it changes nothing. It exits 0 whatever it finds.
--json prints {"checks": [{"name", "ok", "detail", "fix", "needed_for"}]};
names are stable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDoctor(cmd.Context(), env, o)
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return cmd
}

func runDoctor(ctx context.Context, env *Env, o doctorOptions) error {
	r := doctor.Run(ctx, doctor.Options{DataDir: env.Dirs.Data, Log: env.Log})
	if o.json {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	for _, c := range r.Checks {
		status := "OK"
		if !c.OK {
			status = "MISSING"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, status, c.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	first := true
	for _, c := range r.Checks {
		if c.OK {
			continue
		}
		if first {
			fmt.Fprintln(tw, "\nTo fix:")
			first = false
		}
		fmt.Fprintf(tw, "  %s\t%s\n  \t(needed for %s)\n", c.Name, c.Fix, c.NeededFor)
	}
	return tw.Flush()
}
