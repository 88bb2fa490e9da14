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
	Name  string
	Image string
	// Prebuilt, when set, is the image to boot, already built by the
	// caller (the containerd shim builds one from a rootfs); Image then
	// only names it in the record.
	Prebuilt   *image.Image
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
	// Shape is what podman's container flags change in the container
	// (--cap-add, --read-only, --ulimit, ...), applied by the guest.
	Shape channel.Shape
	// Progress receives image pull progress.
	Progress io.Writer
	// Health is the optional health check (health.go).
	Health HealthOptions
	// Hostname is the container's (and the guest's) host name; "" is the
	// short ID, as podman's default.
	Hostname string
	// Replace removes a VM of the same name first (run --replace).
	Replace bool
	// StopSignal and StopTimeout are what stop uses unless told (run
	// --stop-signal, --stop-timeout); 0 and nil: SIGTERM and 10 s.
	StopSignal  int
	StopTimeout *int
	// Restart is the --restart policy (restart.go).
	Restart string
	// Pull is the --pull policy: missing (""), always, newer or never.
	Pull string
	// Driver, when set, starts the VM instead of the one VMM names (tests,
	// tuned drivers).
	Driver vmm.Driver
	// PodSlots is the number of spare read-only disks a pod VM (the
	// containerd shim's CRI sandbox) boots with, for its members' images
	// (SlotPath); at most MaxPodSlots.
	PodSlots int
}

// Limits on the resources a VM may ask for.
const (
	MinMemoryMiB = 128
	MaxCPUs      = 64
	MaxPodSlots  = 8
)

// slotSize is the size of a pod VM's spare disk: sparse, so what it costs
// is the image written into it; an image expands to at most 64 GiB.
const slotSize = 64 << 30

// SlotPath is the backing file of the pod VM's spare disk i, which the
// guest finds as SlotID(i); the containerd shim writes a member's image
// into it (storage.FillSlot) before it starts the member.
func (vm *VM) SlotPath(i int) string {
	return filepath.Join(vm.Record.Dir, fmt.Sprintf("slot%d.img", i))
}

// SlotID is the serial of spare disk i.
func SlotID(i int) string { return fmt.Sprintf("slot%d", i) }

// Validate checks the options that need no I/O.
func (o *Options) Validate() error {
	if err := o.Shape.Validate(); err != nil {
		return err
	}
	if o.Network == "none" {
		for _, f := range []struct {
			name string
			set  []string
		}{{"--dns", o.Shape.DNS}, {"--dns-search", o.Shape.DNSSearch}, {"--dns-option", o.Shape.DNSOptions}} {
			if len(f.set) > 0 {
				return fmt.Errorf("%s: conflicts with --network none (no resolver to name), as in podman", f.name)
			}
		}
	}
	if o.PodSlots < 0 || o.PodSlots > MaxPodSlots {
		return fmt.Errorf("pod slots %d: must be between 0 and %d", o.PodSlots, MaxPodSlots)
	}
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
	sp, err := network.ParseMode(o.Network)
	if err != nil {
		return err
	}
	if len(o.Publish) > 0 && sp.Mode == network.ModeNS {
		return errors.New("-p with --network ns:PATH: the namespace's owner routes to its address; publish ports there, or use --network rootless or bridged")
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
	if err := validHostname(o.Hostname); err != nil {
		return err
	}
	if o.StopTimeout != nil && *o.StopTimeout < 0 {
		return fmt.Errorf("--stop-timeout %d: must be 0 or more seconds", *o.StopTimeout)
	}
	if _, err := ParseRestart(o.Restart); err != nil { // restart.go
		return err
	}
	switch o.Pull {
	case "", "missing", "always", "newer", "never":
	default:
		return fmt.Errorf("--pull %q: must be missing, always, newer or never", o.Pull)
	}
	if o.Restart != "" && o.Restart != "no" && o.Remove {
		return errors.New("--restart: a VM removed when it exits (--rm) cannot restart: drop one of them")
	}
	return o.Health.validate(o.Network) // health.go
}

// validHostname checks --hostname as podman does: a DNS name of at most
// 64 characters (the kernel's limit).
func validHostname(h string) error {
	if h == "" {
		return nil
	}
	ok := len(h) <= 64
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			ok = false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				ok = false
			}
		}
	}
	if !ok {
		return fmt.Errorf("--hostname %q: not a valid host name: use letters, digits and '-' in dot-separated labels, at most 64 characters", h)
	}
	return nil
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
	// relaunched is set for a VM booted again from its record (start).
	relaunched bool

	// volumes serves the -v directories (volumes.go).
	volumes *volumeServers

	net *network.Network

	// health is the optional health check (health.go).
	health *vmHealth

	sess *session
	// snapMu serialises snapshots, pause and resume of the VM (Snapshot,
	// pause.go); paused changes only under it.
	snapMu  sync.Mutex
	paused  atomic.Bool
	stopped atomic.Bool // a stop request killed the VM
	// stopRequested is set by a stop request: the container ended because
	// the user asked, which no restart policy undoes.
	stopRequested atomic.Bool
	answered      atomic.Bool // the guest has answered the channel once
	exited        chan struct{}

	log    *slog.Logger
	store  *state.Store
	dirs   datadir.Dirs
	driver vmm.Driver
}

// phaseTimer times the steps of a launch.
type phaseTimer struct {
	phases []Phase
	mark   time.Time
}

func newPhaseTimer() *phaseTimer { return &phaseTimer{mark: time.Now()} }

// phase ends the step called name.
func (t *phaseTimer) phase(name string) {
	now := time.Now()
	t.phases = append(t.phases, Phase{name, now.Sub(t.mark)})
	t.mark = now
}

// bootSpec is what a cold boot and a clone know before anything is made on
// the host; prepare turns it into a VM whose machine only has to start.
type bootSpec struct {
	// rec is the new record; prepare creates it, filling ID and Dir.
	rec *state.Record
	// existing says rec is already stored (a relaunch): prepare keeps it,
	// and a failed start records the error instead of removing it.
	existing bool
	driver   vmm.Driver
	// boot is how the guest boots; prepare fills its Plan and records it
	// in the VM's dir (launchFile), where a snapshot of the VM reads it.
	boot launchInfo
	plan *channel.Plan
	// upper makes the VM's writable disk at path.
	upper func(ctx context.Context, path string) error
	// cmdline is appended to the kernel command line (cold boots).
	cmdline string
	ports   []network.Port
	// started is set for clones, whose container already runs.
	started bool
}

// makeSlot makes an empty spare disk at path (sparse: it costs nothing
// until an image is written into it).
func makeSlot(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("make slot disk: %w", err)
	}
	err = f.Truncate(slotSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("make slot disk %s: %w", path, err)
	}
	return nil
}

// prepare does what a cold boot and a clone share: the record, the VM
// value, its runtime dir and upper disk, the network, and the vmm.Config
// of all of them. Only how the machine starts (Start or Restore) differs.
// On error the VM it returns, if any, must be torn down by the caller.
func prepare(ctx context.Context, log *slog.Logger, dirs datadir.Dirs, store *state.Store, spec bootSpec, t *phaseTimer) (*VM, vmm.Config, error) {
	rec := spec.rec
	if !spec.existing {
		if err := store.Create(rec); err != nil {
			return nil, vmm.Config{}, err
		}
	}
	vm := &VM{Record: rec, Plan: spec.plan, log: log, store: store, dirs: dirs, driver: spec.driver,
		Generation: spec.boot.Generation, started: spec.started, relaunched: spec.existing, exited: make(chan struct{})}
	if spec.plan.Hostname == "" {
		// A cold boot's container is named for its VM; a clone keeps the
		// snapshot's.
		spec.plan.Hostname = rec.ShortID()
	}
	t.phase("record")
	rec.RuntimeDir = dirs.VMRuntime(rec.ID[:12])
	if err := os.MkdirAll(rec.RuntimeDir, 0o700); err != nil {
		return vm, vmm.Config{}, fmt.Errorf("make runtime dir: %w", err)
	}
	upper := filepath.Join(rec.Dir, "upper.ext4")
	if err := spec.upper(ctx, upper); err != nil {
		return vm, vmm.Config{}, err
	}
	t.phase("disks")
	cfg := vmm.Config{
		Name:       rec.Name,
		RuntimeDir: rec.RuntimeDir,
		Kernel:     spec.boot.Kernel,
		Initrd:     spec.boot.Initrd,
		Cmdline:    spec.cmdline,
		VCPUs:      rec.CPUs,
		MemoryMiB:  rec.MemoryMiB,
		Disks: []vmm.Disk{
			{ID: "base", Path: spec.boot.Rootfs, ReadOnly: true},
			{ID: "upper", Path: upper},
			{ID: "image", Path: spec.boot.ImageDisk, ReadOnly: true},
		},
		ConsoleLog: filepath.Join(rec.Dir, "console.log"),
	}
	for i := range spec.boot.Slots {
		path := vm.SlotPath(i)
		if err := makeSlot(path); err != nil {
			return vm, cfg, err
		}
		cfg.Disks = append(cfg.Disks, vmm.Disk{ID: SlotID(i), Path: path, ReadOnly: true})
	}
	// A clone keeps the guest's network identity (the same inside every
	// VM's namespace); only the host side and the published ports are its
	// own.
	if err := vm.setupNetwork(ctx, dirs, rec.Network.Mode, spec.ports, &cfg); err != nil {
		return vm, cfg, err
	}
	li := spec.boot
	li.Plan, li.Cmdline = spec.plan, cfg.Cmdline
	if err := writeLaunchInfo(rec.Dir, li); err != nil {
		return vm, cfg, err
	}
	return vm, cfg, nil
}

// Launch does the host-side work and boots the VM. On error nothing it made
// is left behind.
func Launch(ctx context.Context, log *slog.Logger, dirs datadir.Dirs, o Options) (*VM, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	ports, err := ParsePublish(o.Publish)
	if err != nil {
		return nil, err
	}
	t := newPhaseTimer()
	set, err := artifacts.Load(dirs.Data)
	if err != nil {
		return nil, err
	}
	driver := o.Driver
	if driver == nil {
		if driver, err = Driver(o.VMM, dirs, log); err != nil {
			return nil, err
		}
	}
	store, err := state.Open(dirs.VMs())
	if err != nil {
		return nil, err
	}
	if o.Name != "" {
		if old, err := store.Get(o.Name); err == nil {
			if !o.Replace {
				return nil, fmt.Errorf("name %q is already in use: choose another --name, remove it with fcvm rm %s, or use --replace", o.Name, o.Name)
			}
			if err := Remove(store, old, true); err != nil {
				return nil, fmt.Errorf("--replace %s: %w", o.Name, err)
			}
		}
	}
	t.phase("checks")

	img := o.Prebuilt
	if img == nil {
		images, err := image.Open(dirs.Images(), log)
		if err != nil {
			return nil, err
		}
		if img, err = ensureImage(ctx, images, o); err != nil {
			return nil, err
		}
	}
	t.phase("image")
	plan, err := buildPlan(o, img)
	if err != nil {
		return nil, err
	}
	volumes, err := openVolumes(o.Volumes, log) // volumes.go
	if err != nil {
		return nil, err
	}
	disks := &storage.Store{Dir: filepath.Join(dirs.Data, "templates")}
	vm, cfg, err := prepare(ctx, log, dirs, store, bootSpec{
		rec: &state.Record{
			Name:        o.Name,
			Image:       o.Image,
			ImageID:     img.ID,
			Cmd:         append(append([]string(nil), plan.Entrypoint...), plan.Cmd...),
			Driver:      driver.Name(),
			CPUs:        o.CPUs,
			MemoryMiB:   o.MemoryMiB,
			Created:     time.Now(),
			Status:      state.StatusStarting,
			Supervisor:  state.Self(),
			Detached:    o.Detach,
			AutoRemove:  o.Remove,
			Network:     state.Network{Mode: o.Network},
			Labels:      o.Labels,
			Volumes:     o.Volumes,
			StopSignal:  o.StopSignal,
			StopTimeout: o.StopTimeout,
			Restart:     o.Restart,
		},
		driver:  driver,
		boot:    launchInfo{Kernel: set.Kernel, Initrd: set.Initrd, Rootfs: set.Rootfs, ImageDisk: img.Disk, Generation: 1, Health: healthToKeep(o.Health), Slots: o.PodSlots},
		plan:    plan,
		upper:   func(ctx context.Context, path string) error { return disks.UpperDisk(ctx, path, o.DiskMiB) },
		cmdline: coldCmdline(),
		ports:   ports,
	}, t)
	if vm == nil {
		volumes.Close()
	} else {
		vm.volumes = volumes // closed by Teardown
	}
	return start(vm, t, err, func() (vmm.Machine, error) {
		if err := vm.prepareHealth(o.Health); err != nil { // health.go
			return nil, err
		}
		t.phase("network")
		m, err := driver.Start(ctx, cfg)
		if err == nil {
			t.phase("vmm spawn")
		}
		return m, err
	})
}

// ensureImage gets o.Image as --pull says: missing pulls what the cache
// lacks (an archive is read every time), always and newer pull again (a
// registry image whose digest did not change costs a manifest request),
// never takes the cache's or fails.
func ensureImage(ctx context.Context, images *image.Store, o Options) (*image.Image, error) {
	opts := image.PullOptions{TLSVerify: o.TLSVerify, Progress: o.Progress}
	switch o.Pull {
	case "always", "newer":
		return images.Pull(ctx, o.Image, opts)
	case "never":
		img, err := images.Lookup(o.Image)
		if errors.Is(err, image.ErrNotFound) {
			return nil, fmt.Errorf("--pull never: image %s is not in the cache: pull it with fcvm image pull %s, or drop --pull never", o.Image, o.Image)
		}
		return img, err
	}
	return images.Ensure(ctx, o.Image, opts)
}

// coldCmdline is what a cold boot adds to the kernel command line.
func coldCmdline() string {
	return strings.TrimSpace(artifacts.KernelArgs + " " + os.Getenv("FCVM_KERNEL_ARGS"))
}

// start finishes a launch that prepare began: it starts the machine with
// run, records it running, and tears everything down on any error.
func start(vm *VM, t *phaseTimer, err error, run func() (vmm.Machine, error)) (*VM, error) {
	if err == nil {
		var m vmm.Machine
		if m, err = run(); err == nil {
			vm.Machine = m
			err = vm.markRunning()
		}
	}
	if err != nil {
		if vm != nil {
			if vm.relaunched {
				vm.Finish(0, err)
			}
			vm.Teardown(!vm.relaunched)
		}
		return nil, err
	}
	vm.Phases = t.phases
	return vm, nil
}

// markRunning records the VMM process and the host side the launch made,
// once the VMM is up; a cold boot stays starting until its container has
// started (markStarted).
func (vm *VM) markRunning() error {
	vmmProc, _ := state.ProcessOf(vm.Machine.PID())
	rec := vm.Record
	if _, err := vm.store.Update(rec.ID, func(r *state.Record) error {
		r.RuntimeDir = rec.RuntimeDir
		r.Network = rec.Network
		r.VMM = vmmProc
		if vm.started {
			// A clone's container runs already.
			r.Status = state.StatusRunning
		}
		r.Started = time.Now()
		return nil
	}); err != nil {
		return err
	}
	rec.VMM = vmmProc
	return nil
}

// markStarted records the VM running once its container has started:
// until then the guest can take no exec, attach or copy.
func (vm *VM) markStarted() {
	if _, err := vm.store.Update(vm.Record.ID, func(r *state.Record) error {
		if r.Status == state.StatusStarting {
			r.Status = state.StatusRunning
		}
		return nil
	}); err != nil {
		vm.log.Warn("record the VM running", "err", err)
	}
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
		Shape:         o.Shape,
		Hostname:      o.Hostname,
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
