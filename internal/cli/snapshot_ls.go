package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newSnapshotLsCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List snapshots",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSnapshotLs(cmd.Context(), env, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// snapshotJSON is one element of `fcvm snapshot ls --json`. Keys are
// stable: fields are only ever added.
type snapshotJSON struct {
	Tag       string    `json:"tag"`
	Created   time.Time `json:"created"`
	Driver    string    `json:"driver"`
	Image     string    `json:"image"`
	SourceVM  string    `json:"source_vm"`
	MemoryMiB int       `json:"memory_mib"`
	Clones    int       `json:"clones"`
}

func runSnapshotLs(_ context.Context, env *Env, asJSON bool) error {
	snaps, err := env.engine().Snapshots()
	if err != nil {
		return err
	}
	out := make([]snapshotJSON, 0, len(snaps))
	for _, m := range snaps {
		out = append(out, snapshotJSON{m.Tag, m.Created, m.Driver, m.Image, m.SourceVM, m.MemoryMiB, m.Clones})
	}
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "TAG\tDRIVER\tIMAGE\tMEMORY\tCLONES\tCREATED")
	for _, s := range out {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d MiB\t%d\t%s\n", s.Tag, s.Driver, s.Image, s.MemoryMiB, s.Clones, s.Created.Format(time.RFC3339))
	}
	return tw.Flush()
}
