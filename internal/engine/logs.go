package engine

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fcvm/fcvm/internal/containerlog"
)

// LogsOptions choose which of a container's output Logs gives.
type LogsOptions struct {
	// Since drops records written before it (zero: none dropped).
	Since time.Time
	// Tail keeps only the records holding the last Tail lines (< 0: all).
	Tail int
	// Follow goes on with new output until the VM stops or ctx ends.
	Follow bool
}

// Logs calls fn with each record of the container output of the VM
// nameOrID, in order, as o says.
func (e *Engine) Logs(ctx context.Context, nameOrID string, o LogsOptions, fn func(containerlog.Record) error) error {
	store, rec, err := e.record(nameOrID)
	if err != nil {
		return err
	}
	path := filepath.Join(rec.Dir, "container.log")
	recs, err := containerlog.ReadAll(path)
	if err != nil {
		return err
	}
	write := func(r containerlog.Record) error {
		if r.Time.Before(o.Since) {
			return nil
		}
		return fn(r)
	}
	for _, r := range tailLines(recs, o.Tail) {
		if err := write(r); err != nil {
			return err
		}
	}
	if !o.Follow || !rec.Effective().Live() {
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			r, err := store.Get(rec.ID)
			if err != nil || !r.Effective().Live() {
				return
			}
		}
	}()
	return containerlog.Follow(path, len(recs), done, write)
}

// tailLines keeps the records holding the last n lines (n < 0: all),
// splitting the first kept record at a line boundary.
func tailLines(recs []containerlog.Record, n int) []containerlog.Record {
	if n < 0 {
		return recs
	}
	lines := 0
	for i := len(recs) - 1; i >= 0; i-- {
		d := recs[i].Data
		for j := len(d) - 1; j >= 0; j-- {
			if d[j] == '\n' {
				lines++
				if lines > n {
					cut := recs[i]
					cut.Data = d[j+1:]
					return append([]containerlog.Record{cut}, recs[i+1:]...)
				}
			}
		}
	}
	return recs
}
