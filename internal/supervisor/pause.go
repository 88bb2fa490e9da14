package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/vmm"
)

// KindPause and KindResume ask the supervisor to freeze and thaw the
// guest's vCPUs (fcvm pause, fcvm unpause).
const (
	KindPause  channel.Kind = "pause"
	KindResume channel.Kind = "resume"
)

// pauseTimeout bounds one QMP stop/cont or PATCH /vm: both answer at once
// from a VMM that works.
const pauseTimeout = 10 * time.Second

// pause stops the guest's vCPUs and records the VM as paused. It holds
// snapMu, so a snapshot (which pauses and resumes the guest itself) never
// overlaps a pause or resume, and vm.paused changes only under it.
func (vm *VM) pause(ctx context.Context) error {
	p, ok := vm.Machine.(vmm.Pauser)
	if !ok {
		return fmt.Errorf("pause VM %s: its VMM (%s) cannot pause a guest", vm.Record.Name, vm.driver.Name())
	}
	vm.snapMu.Lock()
	defer vm.snapMu.Unlock()
	if vm.paused.Load() {
		return fmt.Errorf("pause VM %s: it is already paused", vm.Record.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, pauseTimeout)
	defer cancel()
	if err := p.Pause(ctx); err != nil {
		return fmt.Errorf("pause VM %s: %w", vm.Record.Name, err)
	}
	vm.paused.Store(true)
	return vm.setStatus(state.StatusRunning, state.StatusPaused)
}

// resume starts the guest's vCPUs again and records the VM as running.
func (vm *VM) resume(ctx context.Context) error {
	p, ok := vm.Machine.(vmm.Pauser)
	if !ok {
		return fmt.Errorf("unpause VM %s: its VMM (%s) cannot pause a guest", vm.Record.Name, vm.driver.Name())
	}
	vm.snapMu.Lock()
	defer vm.snapMu.Unlock()
	if !vm.paused.Load() {
		return fmt.Errorf("unpause VM %s: it is not paused", vm.Record.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, pauseTimeout)
	defer cancel()
	if err := p.Resume(ctx); err != nil {
		return fmt.Errorf("unpause VM %s: %w", vm.Record.Name, err)
	}
	vm.paused.Store(false)
	return vm.setStatus(state.StatusPaused, state.StatusRunning)
}

// setStatus moves the record from status from to status to, and leaves a
// record in any other status (stopping, exited) as it is: those are the
// supervisor's later word.
func (vm *VM) setStatus(from, to state.Status) error {
	_, err := vm.store.Update(vm.Record.ID, func(r *state.Record) error {
		if r.Status == from {
			r.Status = to
		}
		return nil
	})
	return err
}

// errPaused is the answer to a request for the guest while it is frozen:
// the guest would not answer it until unpause.
func (vm *VM) errPaused() error {
	return fmt.Errorf("VM %s is paused: unpause it first with fcvm unpause %s", vm.Record.Name, vm.Record.Name)
}

// RequestPause asks the supervisor of the VM whose runtime dir is
// runtimeDir to pause it, and returns once the guest's vCPUs are stopped.
func RequestPause(ctx context.Context, runtimeDir string) error {
	return requestControl(ctx, runtimeDir, KindPause)
}

// RequestResume asks the supervisor to unpause the VM, and returns once
// its vCPUs run again.
func RequestResume(ctx context.Context, runtimeDir string) error {
	return requestControl(ctx, runtimeDir, KindResume)
}

func requestControl(ctx context.Context, runtimeDir string, kind channel.Kind) error {
	conn, _, err := dialControl(ctx, runtimeDir, controlRequest{Request: channel.Request{Kind: kind}})
	if err != nil {
		return err
	}
	return conn.Close()
}
