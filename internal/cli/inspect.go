package cli

import (
	"context"
	"errors"
	"fmt"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/state"
)

type inspectOptions struct {
	names  []string
	format string
}

func newInspectCmd(env *Env) *cobra.Command {
	var o inspectOptions
	cmd := &cobra.Command{
		Use:   "inspect NAME|ID...",
		Short: "Show VMs' full records as JSON",
		Long: `Print a JSON array with the full record of each VM named, like podman
inspect. A VM is named by its name, its full ID or a unique ID prefix.

"status" is the effective status (dead when the supervisor is gone; then
"recorded_status" says what the record claimed). For a VM whose VMM is
running, "memory" has the VMM's rss_kib and pss_kib from
/proc/PID/smaps_rollup.

--format takes a Go template run once per VM over the record's Go fields,
e.g. '{{.Status}} {{.VMM.PID}} {{.Network.GuestIP}} {{.Memory.PSSKiB}}'.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			return runInspect(cmd.Context(), env, o)
		},
	}
	cmd.Flags().StringVarP(&o.format, "format", "f", "", "a Go template per VM instead of JSON")
	return cmd
}

// inspectJSON is the record as stored, with the status readers should
// believe and, for a live VMM, its memory use.
type inspectJSON struct {
	*state.Record
	// Status shadows the stored status: encoding/json prefers the less
	// nested field.
	Status         state.Status  `json:"status"`
	RecordedStatus state.Status  `json:"recorded_status,omitempty"`
	Memory         *state.Memory `json:"memory,omitempty"`
}

func runInspect(_ context.Context, env *Env, o inspectOptions) error {
	e := env.engine()
	if o.format != "" {
		// Fail on a bad template before printing anything.
		if _, err := template.New("format").Parse(o.format); err != nil {
			return fmt.Errorf("parse --format: %w", err)
		}
	}
	// Like podman: print what was found, fail for what was not.
	out := []inspectJSON{}
	var errs []error
	for _, name := range o.names {
		r, err := e.Inspect(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		j := inspectJSON{Record: r, Status: r.Effective()}
		if j.Status != r.Status {
			j.RecordedStatus = r.Status
		}
		if j.Status.Live() {
			if m, err := r.VMM.Memory(); err == nil {
				j.Memory = &m
			}
		}
		out = append(out, j)
	}
	if o.format != "" {
		if err := writeTemplate(env.Stdout, o.format, out); err != nil {
			return err
		}
	} else if err := writeJSON(env.Stdout, out); err != nil {
		return err
	}
	return errors.Join(errs...)
}
