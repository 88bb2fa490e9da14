package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/state"
)

func testEngine(t *testing.T) (*Engine, *state.Store) {
	t.Helper()
	root := t.TempDir()
	dirs := datadir.Dirs{Data: filepath.Join(root, "data"), Runtime: filepath.Join(root, "run")}
	store, err := state.Open(dirs.VMs())
	if err != nil {
		t.Fatal(err)
	}
	return New(dirs, slog.New(slog.NewTextHandler(io.Discard, nil))), store
}

// TestStoppedVM: the verbs on a VM that has exited, as podman treats a
// stopped container.
func TestStoppedVM(t *testing.T) {
	e, store := testEngine(t)
	code := 3
	rec := &state.Record{Name: "done", Image: "busybox", Status: state.StatusExited, ExitCode: &code, Created: time.Now()}
	if err := store.Create(rec); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if got, err := e.Wait(ctx, "done"); err != nil || got != 3 {
		t.Errorf("Wait = %d, %v; want 3", got, err)
	}
	if err := e.Stop(ctx, "done", time.Second); err != nil {
		t.Errorf("Stop of an exited VM: %v, want success as podman", err)
	}
	if _, err := e.Exec(ctx, "done", execReq("true")); err == nil || !strings.Contains(err.Error(), "not running (exited)") {
		t.Errorf("Exec in an exited VM: %v", err)
	}
	if _, err := e.Snapshot(ctx, "done", "t1"); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("Snapshot of an exited VM: %v", err)
	}
	recs, err := e.List()
	if err != nil || len(recs) != 1 || recs[0].ID != rec.ID {
		t.Errorf("List = %v, %v", recs, err)
	}
	if err := e.Remove("done", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Inspect("done"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Inspect after Remove: %v, want ErrNotFound", err)
	}
}

// TestLiveVM: a running VM (this test process is its supervisor) is not
// removed without force, and waiting ends with the context.
func TestLiveVM(t *testing.T) {
	e, store := testEngine(t)
	rec := &state.Record{Name: "up", Image: "busybox", Status: state.StatusRunning, Supervisor: state.Self(), Created: time.Now()}
	if err := store.Create(rec); err != nil {
		t.Fatal(err)
	}
	if err := e.Remove("up", false); err == nil || !strings.Contains(err.Error(), "fcvm rm -f") {
		t.Errorf("Remove of a running VM: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := e.Wait(ctx, "up"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on a running VM: %v, want the context's end", err)
	}
	for _, name := range []string{"nosuch"} {
		if err := e.Stop(context.Background(), name, time.Second); !errors.Is(err, state.ErrNotFound) {
			t.Errorf("Stop %s: %v", name, err)
		}
	}
}

func execReq(cmd ...string) channel.ExecRequest { return channel.ExecRequest{Cmd: cmd} }
