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
// sockets. It is idempotent. Processes are signalled with
// [state.Process.Signal], so a PID the kernel has since given to another
// process is left alone.
func Reclaim(r *state.Record) error {
	var errs []error
	if err := r.VMM.Signal(syscall.SIGKILL); err == nil {
		waitGone(r.VMM, 5*time.Second)
	} else if !errors.Is(err, state.ErrNoProcess) {
		errs = append(errs, fmt.Errorf("kill VMM of VM %s: %w", r.Name, err))
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
// A supervisor that cannot be signalled (another user's) is an error, and
// then nothing of the VM is reclaimed under it.
func Kill(r *state.Record, grace time.Duration) error {
	sup := r.Supervisor
	if sup.PID == os.Getpid() && sup.Alive() {
		return fmt.Errorf("kill VM %s: it is supervised by this process", r.Name)
	}
	err := sup.Signal(syscall.SIGTERM)
	switch {
	case err == nil:
		if !waitGone(sup, grace) {
			sup.Signal(syscall.SIGKILL)
			waitGone(sup, 5*time.Second)
		}
	case !errors.Is(err, state.ErrNoProcess):
		return fmt.Errorf("kill VM %s: %w", r.Name, err)
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

// Remove deletes the VM r from store: its disks, record and everything it
// left on the host. A live VM is refused with ErrRunning unless force,
// which kills it first.
func Remove(store *state.Store, r *state.Record, force bool) error {
	if r.Effective().Live() {
		if !force {
			return fmt.Errorf("%w: stop VM %s first with `fcvm stop %s`, or use `fcvm rm -f`", ErrRunning, r.Name, r.Name)
		}
		if err := Kill(r, 10*time.Second); err != nil {
			return err
		}
	} else if err := Reclaim(r); err != nil {
		return err
	}
	return store.Remove(r.ID)
}
