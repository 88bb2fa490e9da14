package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcvm/fcvm/internal/artifacts"
	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/image"
	"github.com/fcvm/fcvm/internal/network"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/storage"
	"github.com/fcvm/fcvm/internal/vmm"
)

// Options are the run flags.
type Options struct {
	Name       string
	Image      string
	Cmd        []string
	Entrypoint *string // nil: the image's
	Env        []string
	Workdir    string
	User       string
	CPUs       int
	MemoryMiB  int
	VMM        string // auto, qemu, firecracker
	Network    string
	// Publish are the -p specs, podman's [IP:]HOSTPORT:GUESTPORT[/PROTO].
	Publish     []string
	Remove      bool
	Detach      bool
	Interactive bool
	TTY         bool
	Rows, Cols  uint16
	Labels      map[string]string
	TLSVerify   bool
	// Volumes are the -v host directories, already checked (volumes.go).
	Volumes []state.Volume
	// DiskMiB is the size of the writable upper disk.
	DiskMiB int
	// Progress receives image pull progress.
	Progress io.Writer
	// Health is the optional health check (health.go).
	Health HealthOptions
}

// Limits on the resources a VM may ask for.
const (
	MinMemoryMiB = 128
	MaxCPUs      = 64
)

// Validate checks the options that need no I/O.
func (o *Options) Validate() error {
	if o.CPUs < 1 || o.CPUs > MaxCPUs {
		return fmt.Errorf("--cpus %d: must be between 1 and %d", o.CPUs, MaxCPUs)
	}
	if o.CPUs > runtime.NumCPU() {
		return fmt.Errorf("--cpus %d: this host has %d CPUs", o.CPUs, runtime.NumCPU())
	}
	if o.MemoryMiB < MinMemoryMiB {
		return fmt.Errorf("--memory %d: must be at least %d MiB", o.MemoryMiB, MinMemoryMiB)
	}
	if total := hostMemoryMiB(); total > 0 && o.MemoryMiB > total {
		return fmt.Errorf("--memory %d: this host has %d MiB", o.MemoryMiB, total)
	}
	if err := validDriver(o.VMM); err != nil { // drivers.go
		return err
	}
	if _, err := network.ParseMode(o.Network); err != nil {
		return err
	}
	if o.Image == "" {
		return errors.New("no image: give an image reference, e.g. fcvm run busybox echo hi")
	}
	if len(o.Publish) > 0 && o.Network == "none" {
		return errors.New("-p: publishing ports needs a network: drop --network none")
	}
	if err := checkNetworkPrivileges(o.Network); err != nil { // net.go
		return err
	}
	return o.Health.validate(o.Network) // health.go
}

func hostMemoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kib int
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			fmt.Sscanf(strings.TrimPrefix(l, "MemTotal:"), "%d", &kib)
		}
	}
	return kib / 1024
}

// Phase is the time one launch step took.
type Phase struct {
	Name string
	Dur  time.Duration
}

// VM is a launched VM owned by this process.
type VM struct {
	Record  *state.Record
	Machine vmm.Machine
	Plan    *channel.Plan
	Phases  []Phase

	// Generation is the channel generation the guest is told (1 for a
	// cold boot; clones count up).
	Generation uint64

	// Trace, if set, is called at the first "agent ready" and
	// "container started" of Run (benchmarks time the phases with it).
	Trace  func(event string)
	traced map[string]bool

	// started is set for clones, whose container already runs.
	started bool

	// volumes serves the -v directories (volumes.go).
	volumes *volumeServers

	net *network.Network

	// health is the optional health check (health.go).
	health *vmHealth

	sess *session
	// snapMu serialises snapshots of the VM (Snapshot).
	snapMu   sync.Mutex
	stopped  atomic.Bool // a stop request killed the VM
	answered atomic.Bool // the guest has answered the channel once
	exited   chan struct{}

	log    *slog.Logger
	store  *state.Store
	dirs   datadir.Dirs
	driver vmm.Driver
}

// Launch does the host-side work and boots the VM. On error nothing it made
// is left behind.
func Launch(ctx context.Context, log *slog.Logger, dirs datadir.Dirs, o Options) (vm *VM, err error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	ports, err := ParsePublish(o.Publish)
	if err != nil {
		return nil, err
	}
	var phases []Phase
	mark := time.Now()
	phase := func(name string) {
		now := time.Now()
		phases = append(phases, Phase{name, now.Sub(mark)})
		mark = now
	}

	set, err := artifacts.Load(dirs.Data)
	if err != nil {
		return nil, err
	}
	driver, err := Driver(o.VMM, dirs, log)
	if err != nil {
		return nil, err
	}
	store, err := state.Open(dirs.VMs())
	if err != nil {
		return nil, err
	}
	if o.Name != "" {
		if _, err := store.Get(o.Name); err == nil {
			return nil, fmt.Errorf("name %q is already in use: choose another --name or remove it with fcvm rm %s", o.Name, o.Name)
		}
	}
	phase("checks")

	images, err := image.Open(dirs.Images(), log)
	if err != nil {
		return nil, err
	}
	img, err := images.Ensure(ctx, o.Image, image.PullOptions{TLSVerify: o.TLSVerify, Progress: o.Progress})
	if err != nil {
		return nil, err
	}
	phase("image")
	plan, err := buildPlan(o, img)
	if err != nil {
		return nil, err
	}

	rec := &state.Record{
		Name:       o.Name,
		Image:      o.Image,
		ImageID:    img.ID,
		Cmd:        append(append([]string(nil), plan.Entrypoint...), plan.Cmd...),
		Driver:     driver.Name(),
		CPUs:       o.CPUs,
		MemoryMiB:  o.MemoryMiB,
		Created:    time.Now(),
		Status:     state.StatusStarting,
		Supervisor: state.Self(),
		Detached:   o.Detach,
		AutoRemove: o.Remove,
		Network:    state.Network{Mode: o.Network},
		Labels:     o.Labels,
		Volumes:    o.Volumes,
	}
	if err := store.Create(rec); err != nil {
		return nil, err
	}
	vm = &VM{Record: rec, Plan: plan, log: log, store: store, dirs: dirs, driver: driver, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			vm.Teardown(true)
			vm = nil
		}
	}()
	if vm.volumes, err = openVolumes(o.Volumes, log); err != nil { // volumes.go
		return vm, err
	}
	plan.Hostname = rec.ShortID()
	rec.RuntimeDir = dirs.VMRuntime(rec.ID[:12])
	if err := os.MkdirAll(rec.RuntimeDir, 0o700); err != nil {
		return vm, fmt.Errorf("make runtime dir: %w", err)
	}
	upper := filepath.Join(rec.Dir, "upper.ext4")
	disks := &storage.Store{Dir: filepath.Join(dirs.Data, "templates")}
	if err := disks.UpperDisk(ctx, upper, o.DiskMiB); err != nil {
		return vm, err
	}
	phase("disks")

	cfg := vmm.Config{
		Name:       rec.Name,
		RuntimeDir: rec.RuntimeDir,
		Kernel:     set.Kernel,
		Initrd:     set.Initrd,
		Cmdline:    strings.TrimSpace(os.Getenv("FCVM_KERNEL_ARGS")),
		VCPUs:      o.CPUs,
		MemoryMiB:  o.MemoryMiB,
		Disks: []vmm.Disk{
			{ID: "base", Path: set.Rootfs, ReadOnly: true},
			{ID: "upper", Path: upper},
			{ID: "image", Path: img.Disk, ReadOnly: true},
		},
		ConsoleLog: filepath.Join(rec.Dir, "console.log"),
	}
	if err := vm.setupNetwork(ctx, dirs, o.Network, ports, &cfg); err != nil {
		return vm, err
	}
	if err := vm.prepareHealth(o.Health); err != nil { // health.go
		return vm, err
	}
	phase("network")
	if err := writeLaunchInfo(rec.Dir, launchInfo{Plan: plan, Kernel: set.Kernel, Initrd: set.Initrd, Rootfs: set.Rootfs, ImageDisk: img.Disk, Cmdline: cfg.Cmdline, Generation: 1}); err != nil {
		return vm, err
	}
	m, err := driver.Start(ctx, cfg)
	if err != nil {
		return vm, err
	}
	vm.Machine = m
	phase("vmm spawn")
	if err := vm.markRunning(); err != nil {
		return vm, err
	}
	vm.Phases = phases
	return vm, nil
}

// markRunning records the VMM process and the host side the launch made,
// once the VMM is up.
func (vm *VM) markRunning() error {
	vmmProc, _ := state.ProcessOf(vm.Machine.PID())
	rec := vm.Record
	if _, err := vm.store.Update(rec.ID, func(r *state.Record) error {
		r.RuntimeDir = rec.RuntimeDir
		r.Network = rec.Network
		r.VMM = vmmProc
		r.Status = state.StatusRunning
		r.Started = time.Now()
		return nil
	}); err != nil {
		return err
	}
	rec.VMM = vmmProc
	return nil
}

// buildPlan resolves the image config and the flags the way podman does.
func buildPlan(o Options, img *image.Image) (*channel.Plan, error) {
	p := &channel.Plan{
		Entrypoint:    img.Config.Entrypoint,
		Cmd:           img.Config.Cmd,
		Workdir:       img.Config.WorkingDir,
		User:          img.Config.User,
		Interactive:   o.Interactive,
		TTY:           o.TTY,
		Rows:          o.Rows,
		Cols:          o.Cols,
		Labels:        o.Labels,
		Volumes:       volumePlans(o.Volumes), // volumes.go
		ClockUnixNano: time.Now().UnixNano(),
	}
	if o.Entrypoint != nil {
		// As podman: --entrypoint replaces the image's entrypoint and drops
		// its cmd.
		p.Entrypoint, p.Cmd = nil, nil
		if *o.Entrypoint != "" {
			p.Entrypoint = []string{*o.Entrypoint}
		}
	}
	if len(o.Cmd) > 0 {
		p.Cmd = o.Cmd
	}
	if len(p.Entrypoint)+len(p.Cmd) == 0 {
		return nil, fmt.Errorf("image %s has no entrypoint or cmd: give a command after the image name", o.Image)
	}
	env := map[string]int{}
	add := func(kv string) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := env[k]; ok {
			p.Env[i] = kv
			return
		}
		env[k] = len(p.Env)
		p.Env = append(p.Env, kv)
	}
	for _, kv := range img.Config.Env {
		add(kv)
	}
	for _, kv := range o.Env {
		add(kv)
	}
	if o.Workdir != "" {
		p.Workdir = o.Workdir
	}
	if o.User != "" {
		p.User = o.User
	}
	return p, nil
}

// Teardown stops the VMM if it still runs and removes what the VM made on
// the host. With remove it also deletes the VM's disks and record.
func (vm *VM) Teardown(remove bool) error {
	var errs []error
	if vm.Machine != nil {
		vm.Machine.Stop(context.Background(), 0)
	}
	if vm.net != nil {
		if err := vm.net.Teardown(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := vm.volumes.Close(); err != nil { // volumes.go
		errs = append(errs, err)
	}
	if vm.Record.RuntimeDir != "" {
		if err := os.RemoveAll(vm.Record.RuntimeDir); err != nil {
			errs = append(errs, err)
		}
	}
	if remove {
		if err := vm.store.Remove(vm.Record.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
