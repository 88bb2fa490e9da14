package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/network"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/vmm"
)

// ErrNotStopped is returned by Relaunch for a VM that is still live.
var ErrNotStopped = errors.New("supervisor: VM is not stopped")

// Relaunch boots the stopped VM nameOrID again with this process as its
// supervisor, as podman's start does for a stopped container: the same
// record (ID, name, published ports, volumes, labels, stop signal and
// timeout, restart policy), the same upper disk, the plan and health check
// it first ran with (launch.json), and a new guest boot. A
// clone boots cold from its own disk. detach is recorded as run -d would.
//
// On error the record stays, exited with the error, and nothing the
// attempt made on the host is left behind.
func Relaunch(ctx context.Context, log *slog.Logger, dirs datadir.Dirs, nameOrID string, detach bool) (*VM, error) {
	store, err := state.Open(dirs.VMs())
	if err != nil {
		return nil, err
	}
	rec, err := store.Get(nameOrID)
	if err != nil {
		return nil, err
	}
	if s := rec.Effective(); s == state.StatusDead {
		// Its supervisor died: what it left must go before a new one.
		if err := Reclaim(rec); err != nil {
			return nil, err
		}
	}
	li, err := readLaunchInfo(rec)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{li.Kernel, li.Initrd, li.Rootfs, li.ImageDisk, filepath.Join(rec.Dir, "upper.ext4")} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("start %s: %w: the VM cannot boot again; run a new one with fcvm run", rec.Name, err)
		}
	}
	driver, err := Driver(rec.Driver, dirs, log)
	if err != nil {
		return nil, err
	}
	t := newPhaseTimer()
	// Claim the record under the store's lock: of two starts at once,
	// one wins and the other sees it live.
	rec, err = store.Update(rec.ID, func(r *state.Record) error {
		if s := r.Effective(); s.Live() {
			return fmt.Errorf("%w: VM %s is %s: stop it first with fcvm stop %s", ErrNotStopped, r.Name, s, r.Name)
		}
		r.Status = state.StatusStarting
		r.Supervisor = state.Self()
		r.VMM = state.Process{}
		r.ExitCode, r.Error = nil, ""
		r.Finished = time.Time{}
		r.Detached = detach
		r.Health = ""
		return nil
	})
	if err != nil {
		return nil, err
	}
	volumes, err := openVolumes(rec.Volumes, log)
	if err != nil {
		failRelaunch(store, rec, err)
		return nil, err
	}
	ports := make([]network.Port, 0, len(rec.Network.Ports))
	for _, p := range rec.Network.Ports {
		ports = append(ports, network.Port{HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort, Proto: p.Proto})
	}
	plan := li.Plan
	plan.Network = nil // setupNetwork makes it anew
	plan.ClockUnixNano = time.Now().UnixNano()
	li.Generation = 1 // a new boot
	vm, cfg, err := prepare(ctx, log, dirs, store, bootSpec{
		rec:      rec,
		existing: true,
		driver:   driver,
		boot:     li,
		plan:     plan,
		upper:    func(context.Context, string) error { return nil }, // kept from the last run
		cmdline:  coldCmdline(),                                      // a clone's first boot was a restore: boot it as any
		ports:    ports,
	}, t)
	if vm == nil {
		volumes.Close()
	} else {
		vm.volumes = volumes
	}
	return start(vm, t, err, func() (vmm.Machine, error) {
		var h HealthOptions
		if li.Health != nil {
			h = *li.Health
		}
		if err := vm.prepareHealth(h); err != nil { // health.go
			return nil, err
		}
		t.phase("network")
		return driver.Start(ctx, cfg)
	})
}

// failRelaunch records why a relaunch stopped before prepare.
func failRelaunch(store *state.Store, rec *state.Record, err error) {
	store.Update(rec.ID, func(r *state.Record) error {
		r.Status, r.Error, r.Finished = state.StatusExited, err.Error(), time.Now()
		return nil
	})
}

// readLaunchInfo reads how rec's VM was booted.
func readLaunchInfo(rec *state.Record) (launchInfo, error) {
	var li launchInfo
	b, err := os.ReadFile(filepath.Join(rec.Dir, launchFile))
	if err == nil {
		err = json.Unmarshal(b, &li)
	}
	if err == nil && li.Plan == nil {
		err = errors.New("no plan")
	}
	if err != nil {
		return li, fmt.Errorf("read launch info of %s: %w", rec.Name, err)
	}
	return li, nil
}

// RestartPolicy is a parsed run --restart value.
type RestartPolicy struct {
	// Mode is "no", "on-failure" or "always".
	Mode string
	// Max bounds on-failure's restarts (0: no bound), as podman's
	// on-failure:N.
	Max int
}

// ParseRestart reads --restart as podman does: no, on-failure[:N], always
// or unless-stopped (which for fcvm is always: a stopped VM is never
// restarted, and nothing restarts VMs at boot).
func ParseRestart(s string) (RestartPolicy, error) {
	mode, max, hasMax := strings.Cut(s, ":")
	p := RestartPolicy{Mode: mode}
	switch mode {
	case "", "no":
		p.Mode = "no"
	case "always", "unless-stopped":
		p.Mode = "always"
	case "on-failure":
	default:
		return p, fmt.Errorf("--restart %q: must be no, on-failure[:MAX], always or unless-stopped", s)
	}
	if hasMax {
		n, err := strconv.Atoi(max)
		if p.Mode != "on-failure" || err != nil || n < 0 {
			return p, fmt.Errorf("--restart %q: only on-failure takes a count, a number of 0 or more (on-failure:3)", s)
		}
		p.Max = n
	}
	return p, nil
}

// Next is the restart its policy makes after the container of vm exited
// with code (runErr: the VM failed instead): vm's successor, booted again
// with this process as its supervisor, or nil when the policy says no, the
// user stopped the VM, or ctx ended. The caller has finished vm (Finish,
// PowerOff, Teardown without removing it).
func (vm *VM) Next(ctx context.Context, code int, runErr error) *VM {
	p, err := ParseRestart(vm.Record.Restart)
	if err != nil || p.Mode == "no" || vm.stopRequested.Load() || ctx.Err() != nil || vm.Record.AutoRemove {
		return nil
	}
	failed := runErr != nil || code != 0
	if p.Mode == "on-failure" && !failed {
		return nil
	}
	rec, err := vm.store.Get(vm.Record.ID)
	if err != nil || rec.Status != state.StatusExited {
		return nil // removed, or started by someone else meanwhile
	}
	if p.Mode == "on-failure" && p.Max > 0 && rec.Restarts >= p.Max {
		return nil
	}
	// podman backs off too: a container that exits at once must not
	// make the host boot VMs back to back as fast as it can.
	delay := min(time.Duration(1<<min(rec.Restarts, 6))*100*time.Millisecond, 5*time.Second)
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(delay):
	}
	next, err := Relaunch(ctx, vm.log, vm.dirs, rec.ID, rec.Detached)
	if err != nil {
		vm.log.Warn("restart", "policy", vm.Record.Restart, "err", err)
		return nil
	}
	if r, err := vm.store.Update(rec.ID, func(r *state.Record) error { r.Restarts++; return nil }); err == nil {
		next.Record.Restarts = r.Restarts
	}
	vm.log.Info("restarted", "policy", vm.Record.Restart, "exit_code", code, "restarts", next.Record.Restarts)
	return next
}

// LaunchPlan is the plan rec's VM boots with (command, environment,
// working directory, user, host name as resolved from the image and the
// flags), from its launch record; nil when there is none.
func LaunchPlan(rec *state.Record) *channel.Plan {
	li, err := readLaunchInfo(rec)
	if err != nil {
		return nil
	}
	return li.Plan
}
