package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fcvm/fcvm/internal/engine"
	"github.com/fcvm/fcvm/internal/state"
)

type statsOptions struct {
	noStream bool
	format   string
	interval int
	names    []string
}

func newStatsCmd(env *Env) *cobra.Command {
	o := &statsOptions{}
	cmd := &cobra.Command{
		Use:   "stats [--no-stream] [--format F] [NAME|ID...]",
		Short: "Show VMs' resource use: CPU, memory, network and disk I/O, as the guest and the host see it",
		Long: `Show the resource use of running VMs (all of them without names), as
podman stats: CPU % (100% is one CPU, measured in the guest over the
interval), memory as the guest sees it (used / total), network and block
I/O, the container's processes, and VMM RSS, the memory the VMM process
holds on the host.

--format takes "json" or a Go template over {{.ID}} {{.Name}} {{.CPUPerc}}
{{.MemUsage}} {{.MemPerc}} {{.NetIO}} {{.BlockIO}} {{.PIDs}} {{.CPUTime}}
{{.AvgCPU}} {{.VMMRSS}}.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.names = args
			return runStats(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.noStream, "no-stream", false, "print one sample and exit")
	f.StringVar(&o.format, "format", "", `"json" or a Go template per VM`)
	f.IntVarP(&o.interval, "interval", "i", 5, "seconds between samples")
	return cmd
}

// statsRow is one VM's line, with podman's field names for --format.
type statsRow struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	CPUPerc  string `json:"cpu_percent"`
	MemUsage string `json:"mem_usage"`
	MemPerc  string `json:"mem_percent"`
	NetIO    string `json:"net_io"`
	BlockIO  string `json:"block_io"`
	PIDs     int    `json:"pids"`
	CPUTime  string `json:"cpu_time"`
	AvgCPU   string `json:"avg_cpu"`
	VMMRSS   string `json:"vmm_rss"`
}

func runStats(ctx context.Context, env *Env, o *statsOptions) error {
	if o.interval < 1 {
		return fmt.Errorf("--interval %d: must be at least 1 second", o.interval)
	}
	e := env.engine()
	names := o.names
	if len(names) == 0 {
		recs, _ := e.List()
		for _, r := range recs {
			if r.Effective() == state.StatusRunning {
				names = append(names, r.ID)
			}
		}
	}
	// CPU % needs two samples: the first pair is a second apart.
	prev := map[string]*engine.Stats{}
	sample := func() ([]statsRow, error) {
		var rows []statsRow
		var errs []error
		for _, n := range names {
			s, err := e.Stats(ctx, n)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			rows = append(rows, statsRowOf(s, prev[n]))
			prev[n] = s
		}
		return rows, errors.Join(errs...)
	}
	if _, err := sample(); err != nil {
		return err
	}
	wait := time.Second
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		rows, err := sample()
		if err != nil {
			return err
		}
		if !o.noStream && isTerminal(env.Stdout) {
			// Redraw in place, as podman's stream does.
			fmt.Fprint(env.Stdout, "\x1b[2J\x1b[H")
		}
		if err := printStats(env, o.format, rows); err != nil {
			return err
		}
		if o.noStream {
			return nil
		}
		wait = time.Duration(o.interval) * time.Second
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func statsRowOf(s, prev *engine.Stats) statsRow {
	g := s.Guest
	r := statsRow{
		ID:       s.ID[:12],
		Name:     s.Name,
		MemUsage: humanBytes(int64(g.MemUsed)) + " / " + humanBytes(int64(g.MemTotal)),
		NetIO:    humanBytes(int64(g.NetRx)) + " / " + humanBytes(int64(g.NetTx)),
		BlockIO:  humanBytes(int64(g.BlockRead)) + " / " + humanBytes(int64(g.BlockWrite)),
		PIDs:     g.PIDs,
		VMMRSS:   humanBytes(int64(s.VMMRSSBytes)),
		CPUPerc:  "--",
	}
	if g.MemTotal > 0 {
		r.MemPerc = fmt.Sprintf("%.2f%%", float64(g.MemUsed)/float64(g.MemTotal)*100)
	}
	cpus := float64(max(g.CPUs, 1))
	if g.CPUTotal > 0 {
		// jiffies: busy over all CPUs, as a share of one CPU.
		r.AvgCPU = fmt.Sprintf("%.2f%%", float64(g.CPUBusy)/float64(g.CPUTotal)*cpus*100)
		r.CPUTime = (time.Duration(g.CPUBusy) * 10 * time.Millisecond).String()
	}
	if prev != nil && g.CPUTotal > prev.Guest.CPUTotal {
		r.CPUPerc = fmt.Sprintf("%.2f%%", float64(g.CPUBusy-prev.Guest.CPUBusy)/float64(g.CPUTotal-prev.Guest.CPUTotal)*cpus*100)
	}
	return r
}

func printStats(env *Env, format string, rows []statsRow) error {
	switch format {
	case "json":
		if rows == nil {
			rows = []statsRow{}
		}
		return writeJSON(env.Stdout, rows)
	case "":
	default:
		return writeTemplate(env.Stdout, format, rows)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tNET IO\tBLOCK IO\tPIDS\tCPU TIME\tAVG CPU %\tVMM RSS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.ID, r.Name, r.CPUPerc, r.MemUsage, r.MemPerc, r.NetIO, r.BlockIO, r.PIDs, r.CPUTime, r.AvgCPU, r.VMMRSS)
	}
	return tw.Flush()
}
