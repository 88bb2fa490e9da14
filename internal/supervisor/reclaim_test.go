package supervisor

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/state"
)

// TestReclaimSignalsOnlyItsVMM: Reclaim kills the VMM its record names,
// and leaves alone a process that has the record's PID but not its start
// time (what a VMM's PID handed to another process looks like).
func TestReclaimSignalsOnlyItsVMM(t *testing.T) {
	other, p := startSleep(t)
	run := t.TempDir()
	stale := &state.Record{Name: "stale", Dir: t.TempDir(), RuntimeDir: run,
		VMM: state.Process{PID: p.PID, StartTime: p.StartTime + 1}}
	if err := Reclaim(stale); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(run); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runtime dir left after Reclaim: %v", err)
	}

	vmm, q := startSleep(t)
	if err := Reclaim(&state.Record{Name: "live", Dir: t.TempDir(), VMM: q}); err != nil {
		t.Fatal(err)
	}
	wantKilledBy(t, vmm, syscall.SIGKILL)
	// The stale record's SIGKILL would have come first.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wantKilledBy(t, other, syscall.SIGTERM)
}

// TestKillSignalsOnlyItsSupervisor: Kill sends SIGTERM to the supervisor
// its record names, and nothing to a process that took over its PID.
func TestKillSignalsOnlyItsSupervisor(t *testing.T) {
	other, p := startSleep(t)
	stale := &state.Record{Name: "stale", Dir: t.TempDir(),
		Supervisor: state.Process{PID: p.PID, StartTime: p.StartTime + 1}}
	if err := Kill(stale, time.Second); err != nil {
		t.Fatal(err)
	}
	sup, q := startSleep(t)
	if err := Kill(&state.Record{Name: "live", Dir: t.TempDir(), Supervisor: q}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wantKilledBy(t, sup, syscall.SIGTERM)
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	wantKilledBy(t, other, syscall.SIGINT)
}

// TestStopClones: the live clones of a memory server are killed, and so
// is nothing else.
func TestStopClones(t *testing.T) {
	dirs := datadir.Dirs{Data: t.TempDir(), Runtime: t.TempDir()}
	store, err := state.Open(dirs.VMs())
	if err != nil {
		t.Fatal(err)
	}
	const servePID = 4242
	clone, p := startSleep(t)
	other, q := startSleep(t)
	for _, r := range []*state.Record{
		{Name: "clone", Status: state.StatusRunning, ServePID: servePID, Supervisor: p},
		{Name: "other-server", Status: state.StatusRunning, ServePID: servePID + 1, Supervisor: q},
	} {
		if err := store.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := StopClones(dirs, servePID); err != nil {
		t.Fatal(err)
	}
	wantKilledBy(t, clone, syscall.SIGTERM)
	if err := q.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	wantKilledBy(t, other, syscall.SIGINT)
}

// startSleep starts a child that waits to be killed, and its record.
func startSleep(t *testing.T) (*exec.Cmd, state.Process) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p, err := state.ProcessOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, p
}

// wantKilledBy waits for cmd and checks that sig, the first signal it
// got, ended it.
func wantKilledBy(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("wait: %v, want death by %v", err, sig)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != sig {
		t.Errorf("child ended with %v, want death by %v (another signal reached it)", ee, sig)
	}
}
