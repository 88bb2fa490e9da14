package supervisor

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/state"
)

// ErrRunning is returned by Remove for a live VM without force.
var ErrRunning = errors.New("supervisor: VM is running")

// Reclaim removes what a VM whose supervisor is gone left behind: its VMM
// process (if it somehow survived the parent-death signal) and its
// sockets. It is idempotent.
func Reclaim(r *state.Record) error {
	var errs []error
	if r.VMM.PID != 0 && r.VMM.Alive() {
		syscall.Kill(r.VMM.PID, syscall.SIGKILL)
		waitGone(r.VMM, 5*time.Second)
	}
	if err := reclaimNetwork(r, nil); err != nil {
		errs = append(errs, err)
	}
	if r.RuntimeDir != "" {
		if err := os.RemoveAll(r.RuntimeDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Kill ends a live VM's supervisor (SIGTERM, then SIGKILL after grace);
// the supervisor tears its VM down, and Reclaim covers what it could not.
func Kill(r *state.Record, grace time.Duration) error {
	if r.Supervisor.PID != 0 && r.Supervisor.Alive() {
		if r.Supervisor.PID == os.Getpid() {
			return fmt.Errorf("kill VM %s: it is supervised by this process", r.Name)
		}
		syscall.Kill(r.Supervisor.PID, syscall.SIGTERM)
		if !waitGone(r.Supervisor, grace) {
			syscall.Kill(r.Supervisor.PID, syscall.SIGKILL)
			waitGone(r.Supervisor, 5*time.Second)
		}
	}
	return Reclaim(r)
}

func waitGone(p state.Process, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for p.Alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
