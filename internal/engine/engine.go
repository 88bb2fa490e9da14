// Package engine is fcvm's one Go API to the VMs of a data directory: run,
// clone, start, exec, attach, logs, copy, top, stats, stop, wait, remove,
// snapshot, list and inspect, with typed options and results. The command
// line is flag parsing and printing over it, and the other front doors
// (the sandbox API server, the containerd shim) use it too, so there is
// one path to a VM.
//
// # Who owns what
//
// A running VM is owned by its supervisor process (package supervisor):
// the VMM, the host-guest channel, the network and the disks. Launch and
// LaunchClone (and Start, for a stopped VM) make the calling process that
// supervisor; every other call reaches the supervisor of an existing VM
// through its control socket or reads the VM's record, so any process may
// make them.
//
// # Errors
//
// Unknown names and IDs wrap state.ErrNotFound ("no such VM: NAME").
// Errors are one line and say what to do.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// Engine acts on the VMs of one data directory.
type Engine struct {
	dirs datadir.Dirs
	log  *slog.Logger
}

// New returns an Engine for dirs that logs to log.
func New(dirs datadir.Dirs, log *slog.Logger) *Engine {
	return &Engine{dirs: dirs, log: log}
}

// Dirs are the engine's data and runtime directories.
func (e *Engine) Dirs() datadir.Dirs { return e.dirs }

func (e *Engine) store() (*state.Store, error) { return state.Open(e.dirs.VMs()) }

// record opens the store and reads nameOrID's record from it.
func (e *Engine) record(nameOrID string) (*state.Store, *state.Record, error) {
	store, err := e.store()
	if err != nil {
		return nil, nil, err
	}
	rec, err := store.Get(nameOrID)
	if err != nil {
		return nil, nil, err
	}
	return store, rec, nil
}

// Launch boots a new VM with this process as its supervisor; the caller
// runs it (VM.Run) and finishes it (Finish, PowerOff, Teardown).
func (e *Engine) Launch(ctx context.Context, o supervisor.Options) (*supervisor.VM, error) {
	return supervisor.Launch(ctx, e.log, e.dirs, o)
}

// LaunchClone starts a clone of a snapshot with this process as its
// supervisor, as Launch does for a cold boot.
func (e *Engine) LaunchClone(ctx context.Context, o supervisor.CloneOptions) (*supervisor.VM, error) {
	return supervisor.LaunchClone(ctx, e.log, e.dirs, o)
}

// Inspect returns the record of the VM nameOrID.
func (e *Engine) Inspect(nameOrID string) (*state.Record, error) {
	_, rec, err := e.record(nameOrID)
	return rec, err
}

// List returns every VM's record. A record that cannot be read is left
// out and reported in err beside the others.
func (e *Engine) List() ([]*state.Record, error) {
	store, err := e.store()
	if err != nil {
		return nil, err
	}
	return store.List()
}

// Running returns the record of nameOrID if its VM is running, else an
// error saying what to do.
func (e *Engine) Running(nameOrID string) (*state.Record, error) {
	rec, err := e.Inspect(nameOrID)
	if err != nil {
		return nil, err
	}
	switch s := rec.Effective(); s {
	case state.StatusRunning:
	case state.StatusPaused:
		return nil, fmt.Errorf("VM %s is paused: unpause it first with fcvm unpause %s", nameOrID, nameOrID)
	case state.StatusStarting:
		return nil, fmt.Errorf("VM %s is starting: its container is not running yet; try again in a moment", nameOrID)
	default:
		return nil, fmt.Errorf("VM %s is not running (%s): start it again with fcvm start %s", nameOrID, s, nameOrID)
	}
	return rec, nil
}

// Stop stops the VM nameOrID: SIGTERM to its container, and after grace
// the VM is powered off. It returns once the supervisor has cleaned up.
// Stopping a VM that is not running succeeds, as podman's stop does; a
// dead one (its supervisor gone) is reclaimed.
func (e *Engine) Stop(ctx context.Context, nameOrID string, grace time.Duration) error {
	store, rec, err := e.record(nameOrID)
	if err != nil {
		return err
	}
	switch rec.Effective() {
	case state.StatusExited, state.StatusCreated:
		return nil
	case state.StatusDead:
		return supervisor.Reclaim(rec)
	}
	if err := supervisor.RequestStop(ctx, rec.RuntimeDir, grace); err != nil {
		// The supervisor cannot be reached: end it the hard way.
		return supervisor.Kill(rec, grace)
	}
	deadline := time.Now().Add(grace + 30*time.Second)
	for {
		r, err := store.Get(rec.ID)
		if err != nil || !r.Effective().Live() {
			return nil
		}
		if time.Now().After(deadline) {
			return supervisor.Kill(r, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Remove deletes the VM nameOrID: its disks, record and everything it
// left on the host. A running VM is refused unless force, which kills it
// first.
func (e *Engine) Remove(nameOrID string, force bool) error {
	store, r, err := e.record(nameOrID)
	if err != nil {
		return err
	}
	if r.Effective().Live() && !force {
		return fmt.Errorf("VM %s is running: stop it first with `fcvm stop %s`, or use `fcvm rm -f`", nameOrID, nameOrID)
	}
	return supervisor.Remove(store, r, force)
}

// Wait blocks until the VM nameOrID has exited and returns its exit code
// (-1 when it has none, as a VM that died with its supervisor).
func (e *Engine) Wait(ctx context.Context, nameOrID string) (int, error) {
	store, rec, err := e.record(nameOrID)
	if err != nil {
		return 0, err
	}
	for rec.Effective().Live() {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if rec, err = store.Get(rec.ID); err != nil {
			return 0, err
		}
	}
	if rec.ExitCode == nil {
		return -1, nil
	}
	return *rec.ExitCode, nil
}

// Snapshot snapshots the running VM nameOrID as tag; the VM goes on.
func (e *Engine) Snapshot(ctx context.Context, nameOrID, tag string) (*snapshot.Manifest, error) {
	return supervisor.CreateSnapshot(ctx, e.log, e.dirs, nameOrID, tag)
}

// ImageFromTree returns an image whose disk holds the directory tree root,
// built once per key (see image.Store.FromTree); launch it with
// supervisor.Options.Prebuilt.
func (e *Engine) ImageFromTree(ctx context.Context, key, root string) (*image.Image, error) {
	images, err := image.Open(e.dirs.Images(), e.log)
	if err != nil {
		return nil, err
	}
	return images.FromTree(ctx, key, root)
}

// Plan returns what the container of rec's VM runs with (command,
// environment, working directory, user, host name), or nil if unknown.
func (e *Engine) Plan(rec *state.Record) *channel.Plan { return supervisor.LaunchPlan(rec) }
