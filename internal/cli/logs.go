package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/fcvm/fcvm/internal/containerlog"
	"github.com/fcvm/fcvm/internal/engine"
)

type logsOptions struct {
	follow     bool
	since      string
	tail       int
	timestamps bool
	name       string
}

func newLogsCmd(env *Env) *cobra.Command {
	o := &logsOptions{}
	cmd := &cobra.Command{
		Use:   "logs [-f] [--since T] [--tail N] [-t] NAME|ID",
		Short: "Show a VM's container output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.name = args[0]
			return runLogs(cmd.Context(), env, o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.follow, "follow", "f", false, "keep following new output until the VM exits")
	f.StringVar(&o.since, "since", "", "only output since a time (RFC 3339) or a duration ago (10m)")
	f.IntVarP(&o.tail, "tail", "n", -1, "only the last N lines")
	f.BoolVarP(&o.timestamps, "timestamps", "t", false, "prefix each line with its time")
	return cmd
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: give a duration (10m) or a time (2006-01-02T15:04:05Z)", s)
}

func runLogs(ctx context.Context, env *Env, o *logsOptions) error {
	since, err := parseSince(o.since, time.Now())
	if err != nil {
		return err
	}
	return env.engine().Logs(ctx, o.name, engine.LogsOptions{Since: since, Tail: o.tail, Follow: o.follow}, func(r containerlog.Record) error {
		w := env.Stdout
		if r.Stream == containerlog.Stderr {
			w = env.Stderr
		}
		return writeLogRecord(w, r, o.timestamps)
	})
}

func writeLogRecord(w io.Writer, r containerlog.Record, timestamps bool) error {
	if !timestamps {
		_, err := w.Write(r.Data)
		return err
	}
	// Timestamps go on each line, so split the record.
	data := r.Data
	ts := r.Time.UTC().Format(time.RFC3339Nano) + " "
	for len(data) > 0 {
		i := indexByte(data, '\n') + 1
		if i == 0 {
			i = len(data)
		}
		if _, err := io.WriteString(w, ts); err != nil {
			return err
		}
		if _, err := w.Write(data[:i]); err != nil {
			return err
		}
		data = data[i:]
	}
	return nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
