package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/fcvm/fcvm/internal/vmm"
)

// Options configure the driver beyond what vmm.Config says about a VM.
type Options struct {
	// Binary is the firecracker executable. Empty means
	// DataDir/bin/firecracker if it exists, else "firecracker" on PATH.
	Binary string
	// DataDir is fcvm's data dir, where `fcvm setup firecracker` installs
	// binaries (DataDir/bin).
	DataDir string
	// Jailer, when set, runs Firecracker through its jailer.
	Jailer *JailerOptions
	// BootPlan is a JSON object put into MMDS (version 2) for fc-agent to
	// read. It needs cfg.Net: MMDS is reached through the network device.
	BootPlan json.RawMessage
	// LogLevel is Firecracker's log level (Error, Warning, Info, Debug,
	// Trace, Off); empty means Info.
	LogLevel string
	// Metrics writes Firecracker's metrics to RuntimeDir/firecracker.metrics.
	Metrics bool
	// Entropy adds a virtio-rng device.
	Entropy bool
	// Balloon adds a balloon device.
	Balloon *Balloon
	// DiskRateLimits limit disks by ID.
	DiskRateLimits map[string]*RateLimiter
	// NetRxRateLimit and NetTxRateLimit limit the network interface.
	NetRxRateLimit, NetTxRateLimit *RateLimiter
	// TrackDirtyPages makes Diff snapshots possible, at some runtime cost.
	TrackDirtyPages bool
	// ConfigFile boots from a --config-file document instead of API calls:
	// fewer round trips, but the guest starts before BootPlan is in MMDS,
	// so fc-agent must retry a 404 from MMDS.
	ConfigFile bool
	// SocketTimeout bounds the wait for the API socket (default 5s).
	SocketTimeout time.Duration
	// KVMDevice is the device Available opens instead of probing the
	// host's KVM with package kvm (tests point it at a stand-in).
	KVMDevice string
	// Log receives the driver's own messages (default: discarded).
	Log *slog.Logger
}

// JailerOptions run Firecracker through its jailer: chroot, uid/gid
// drop, cgroups and a network namespace.
type JailerOptions struct {
	// Binary is the jailer executable; empty means beside the firecracker
	// binary, then DataDir/bin/jailer, then "jailer" on PATH.
	Binary   string
	UID, GID int
	// ChrootBase is the jailer's --chroot-base-dir; empty means
	// RuntimeDir/jail. Files are hard-linked into the jail, so it must be
	// on the same filesystem as the VM's writable disks.
	ChrootBase string
	// CgroupVersion is 1 or 2 (0: the jailer's default).
	CgroupVersion int
	// Cgroups are "file=value" settings, e.g. "cpu.max=50000 100000".
	Cgroups      []string
	ParentCgroup string
}

func (o *Options) logLevel() string {
	if o.LogLevel == "" {
		return "Info"
	}
	return o.LogLevel
}

func (o *Options) logger() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o.Log
}

// Driver starts Firecracker VMs.
type Driver struct {
	opts Options
}

var (
	_ vmm.Driver               = (*Driver)(nil)
	_ vmm.MemoryServerRestorer = (*Driver)(nil)
)

// RestoresFromMemoryServer implements vmm.MemoryServerRestorer: the Uffd
// memory backend.
func (d *Driver) RestoresFromMemoryServer() bool { return true }

// New returns a driver. It checks nothing; call Available.
func New(opts Options) *Driver {
	return &Driver{opts: opts}
}

// Name is "firecracker".
func (d *Driver) Name() string { return "firecracker" }

// Start boots a VM. The config and options are checked before the process
// starts, so a bad value leaves nothing behind.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	m, err := d.StartMachine(ctx, cfg)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return m, nil
}

// StartMachine is Start returning the concrete type.
func (d *Driver) StartMachine(ctx context.Context, cfg vmm.Config) (*Machine, error) {
	if err := checkConfig(cfg, &d.opts); err != nil {
		return nil, err
	}
	p, err := d.newPlan(cfg)
	if err != nil {
		return nil, err
	}
	var reqs []Request
	var configFile *VMConfig
	if d.opts.ConfigFile {
		if configFile, err = vmConfig(cfg, &d.opts, p); err != nil {
			return nil, err
		}
		if d.opts.BootPlan != nil {
			reqs = []Request{PutMMDS(d.opts.BootPlan)}
		}
	} else if reqs, err = bootRequests(cfg, &d.opts, p); err != nil {
		return nil, err
	}
	m, err := d.launch(ctx, cfg, p, configFile)
	if err != nil {
		return nil, err
	}
	m.memMiB, m.dirtyPages = cfg.MemoryMiB, d.opts.TrackDirtyPages
	if err := m.send(ctx, reqs); err != nil {
		return nil, errors.Join(err, m.kill())
	}
	return m, nil
}

// Restore implements vmm.Restorer: the memory comes from the memory server
// at ro.UffdSocket when set (the Uffd backend), else from the snapshot's
// memory file mapped privately (the File backend).
func (d *Driver) Restore(ctx context.Context, cfg vmm.Config, ro vmm.RestoreOptions) (vmm.Machine, error) {
	m, err := d.RestoreMachine(ctx, cfg, RestoreOptions{Dir: ro.Dir, MemFile: ro.MemFile, UffdSocket: ro.UffdSocket, TrackDirtyPages: d.opts.TrackDirtyPages})
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return m, nil
}

// MinRestoreVersion is the oldest Firecracker that can restore a clone:
// vsock_override, which gives each clone its own channel socket, came in
// 1.16.
var MinRestoreVersion = [3]int{1, 16, 0}

// RestoreMachine starts a VM from a snapshot as ro says.
func (d *Driver) RestoreMachine(ctx context.Context, cfg vmm.Config, ro RestoreOptions) (*Machine, error) {
	if err := checkConfig(cfg, &d.opts); err != nil {
		return nil, err
	}
	p, err := d.newPlan(cfg)
	if err != nil {
		return nil, err
	}
	reqs, err := restoreRequests(cfg, &d.opts, ro, p)
	if err != nil {
		return nil, err
	}
	m, err := d.launch(ctx, cfg, p, nil)
	if err != nil {
		return nil, err
	}
	m.memMiB, m.dirtyPages = cfg.MemoryMiB, ro.TrackDirtyPages
	var v Version
	if err := m.client.Do(ctx, GetVersion(), &v); err != nil {
		return nil, errors.Join(err, m.kill())
	}
	if got, err := ParseVersion(v.FirecrackerVersion); err != nil || older(got, MinRestoreVersion) {
		return nil, errors.Join(fmt.Errorf("restore %s: firecracker %q cannot restore clones (needs %d.%d or newer for vsock_override): install a newer release with fcvm setup firecracker",
			ro.Dir, v.FirecrackerVersion, MinRestoreVersion[0], MinRestoreVersion[1]), m.kill())
	}
	if err := m.send(ctx, reqs); err != nil {
		return nil, errors.Join(err, m.kill())
	}
	return m, nil
}

func (d *Driver) newPlan(cfg vmm.Config) (*plan, error) {
	if d.opts.Jailer == nil {
		return newPlan(cfg, ""), nil
	}
	bin := d.binaryPath()
	if abs, err := exec.LookPath(bin); err == nil {
		bin = abs
	}
	root, err := jailRoot(cfg, d.opts.Jailer, bin)
	if err != nil {
		return nil, err
	}
	return newPlan(cfg, root), nil
}

// binaryPath resolves the firecracker binary without checking it runs.
func (d *Driver) binaryPath() string {
	if d.opts.Binary != "" {
		return d.opts.Binary
	}
	return findBinary(d.opts.DataDir, "firecracker")
}

func findBinary(dataDir, name string) string {
	if dataDir != "" {
		p := filepath.Join(dataDir, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return name
}
