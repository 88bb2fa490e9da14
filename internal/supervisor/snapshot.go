package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/atomicfile"
	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/network"
	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/storage"
	"github.com/fcvm/fcvm/internal/vmm"
)

// launchFile records, in the VM's dir, what a snapshot of it needs to know
// about how it was booted.
const launchFile = "launch.json"

type launchInfo struct {
	Plan       *channel.Plan `json:"plan"`
	Kernel     string        `json:"kernel"`
	Initrd     string        `json:"initrd"`
	Rootfs     string        `json:"rootfs"`
	ImageDisk  string        `json:"image_disk"`
	Cmdline    string        `json:"cmdline"`
	Generation uint64        `json:"generation"`
	// Health is the run's health check, which start brings back.
	Health *HealthOptions `json:"health,omitempty"`
	// Slots is the number of spare disks of a pod VM (Options.PodSlots).
	Slots int `json:"slots,omitempty"`
}

func writeLaunchInfo(dir string, li launchInfo) error {
	b, err := json.Marshal(li)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, launchFile), b, 0o644)
}

// KindSnapshot asks the supervisor to snapshot its VM as controlRequest.Tag;
// the reply is the snapshot's manifest.
const KindSnapshot channel.Kind = "snapshot"

// CreateSnapshot snapshots the running VM nameOrID as tag. The VM's
// supervisor, which owns the VMM, does the work (VM.Snapshot); the VM
// pauses for the copy of its memory and disk, and then goes on.
func CreateSnapshot(ctx context.Context, log *slog.Logger, dirs datadir.Dirs, nameOrID, tag string) (*snapshot.Manifest, error) {
	if err := snapshot.ValidTag(tag); err != nil {
		return nil, err
	}
	store, err := state.Open(dirs.VMs())
	if err != nil {
		return nil, err
	}
	rec, err := store.Get(nameOrID)
	if err != nil {
		return nil, err
	}
	if rec.Effective() != state.StatusRunning {
		return nil, fmt.Errorf("VM %s is not running (%s): only a running VM can be snapshotted", nameOrID, rec.Effective())
	}
	if len(rec.Volumes) > 0 {
		return nil, fmt.Errorf("VM %s has volumes (-v), which do not survive a snapshot restore: snapshot a VM without volumes", nameOrID)
	}
	if err := snapshotsNetwork(nameOrID, rec.Network.Mode); err != nil {
		return nil, err
	}
	conn, payload, err := dialControl(ctx, rec.RuntimeDir, controlRequest{Request: channel.Request{Kind: KindSnapshot}, Tag: tag})
	if err != nil {
		var ge *channel.GuestError
		if errors.As(err, &ge) {
			// The supervisor's own error, not the guest's.
			return nil, fmt.Errorf("snapshot %s of %s: %s", tag, nameOrID, ge.Msg)
		}
		return nil, fmt.Errorf("snapshot %s of %s: %w", tag, nameOrID, err)
	}
	conn.Close()
	var m snapshot.Manifest
	if err := json.Unmarshal(payload, &m); err != nil {
		return nil, fmt.Errorf("snapshot %s of %s: decode manifest: %w", tag, nameOrID, err)
	}
	log.Info("snapshot created", "tag", tag, "vm", rec.Name)
	return &m, nil
}

// Snapshot snapshots this VM as tag: its machine pauses, writes its state
// and memory into a staging directory, the upper disk is copied while it is
// paused, and the directory becomes the snapshot with its manifest. One
// snapshot of a VM runs at a time.
func (vm *VM) Snapshot(ctx context.Context, tag string) (*snapshot.Manifest, error) {
	if err := snapshot.ValidTag(tag); err != nil {
		return nil, err
	}
	snapper, ok := vm.Machine.(vmm.Snapshotter)
	if !ok {
		return nil, fmt.Errorf("VM %s runs under %s, which cannot snapshot", vm.Record.Name, vm.driver.Name())
	}
	if len(vm.Record.Volumes) > 0 {
		return nil, fmt.Errorf("VM %s has volumes (-v), which do not survive a snapshot restore: snapshot a VM without volumes", vm.Record.Name)
	}
	if err := snapshotsNetwork(vm.Record.Name, vm.Record.Network.Mode); err != nil {
		return nil, err
	}
	vm.snapMu.Lock()
	defer vm.snapMu.Unlock()
	if vm.paused.Load() {
		// Snapshot resumes the guest when it is done: unpause is the user's.
		return nil, vm.errPaused()
	}
	rec := vm.Record
	li, err := readLaunchInfo(rec) // restart.go
	if err != nil {
		return nil, err
	}
	if li.Slots > 0 {
		return nil, fmt.Errorf("VM %s is a pod's, whose members' images are on disks its clones would not have: snapshot a VM of its own", rec.Name)
	}
	snaps := &snapshot.Store{Dir: vm.dirs.Snapshots()}
	staging, err := snaps.Staging(tag)
	if err != nil {
		return nil, err
	}
	ok = false
	defer func() {
		if !ok {
			os.RemoveAll(staging)
		}
	}()
	upper := filepath.Join(rec.Dir, "upper.ext4")
	size, err := snapper.SnapshotSize()
	if err != nil {
		return nil, err
	}
	if err := checkSpace(staging, uint64(size), upper); err != nil {
		return nil, err
	}
	memName, err := snapper.Snapshot(ctx, staging, func() error {
		if err := storage.Clone(upper, filepath.Join(staging, snapshot.DiskFile)); err != nil {
			return fmt.Errorf("copy disk: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	m := &snapshot.Manifest{
		Tag:        tag,
		Created:    time.Now(),
		Driver:     rec.Driver,
		SourceVM:   rec.ID,
		Image:      rec.Image,
		ImageID:    rec.ImageID,
		ImageDisk:  li.ImageDisk,
		CPUs:       rec.CPUs,
		MemoryMiB:  rec.MemoryMiB,
		Kernel:     li.Kernel,
		Initrd:     li.Initrd,
		Rootfs:     li.Rootfs,
		Generation: li.Generation,
		Network:    rec.Network,
		Ports:      rec.Network.Ports,
		Volumes:    rec.Volumes,
		Plan:       li.Plan,
		MemFile:    memName,
	}
	if err := snaps.Commit(staging, m); err != nil {
		return nil, err
	}
	ok = true
	vm.log.Info("snapshot created", "tag", tag)
	return m, nil
}

// snapshotsNetwork refuses a VM that joined a network namespace: every
// clone would come up with its address and MAC, in a namespace one VM
// already holds.
func snapshotsNetwork(name, mode string) error {
	if sp, err := network.ParseMode(mode); err == nil && sp.Mode == network.ModeNS {
		return fmt.Errorf("VM %s joined the network namespace %s (--network ns:), whose one address its clones cannot share: snapshot a VM with another network", name, sp.NetNS)
	}
	return nil
}

// checkSpace fails when dir's filesystem cannot hold extra bytes and
// copies of files, saying how much is needed.
func checkSpace(dir string, extra uint64, files ...string) error {
	need := extra
	for _, f := range files {
		var st unix.Stat_t
		if err := unix.Stat(f, &st); err != nil {
			return fmt.Errorf("snapshot: %s: %w", f, err)
		}
		need += uint64(st.Blocks) * 512
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if avail := fs.Bavail * uint64(fs.Bsize); avail < need {
		return fmt.Errorf("snapshot: not enough disk in %s: need %d MiB, %d MiB free", dir, need>>20, avail>>20)
	}
	return nil
}

// CloneOptions are the flags of `fcvm snapshot run`.
type CloneOptions struct {
	Tag      string
	Name     string
	VMM      string // "" or auto: the snapshot's driver
	Detach   bool
	Remove   bool
	ServePID int
	// MemoryBackend is where a Firecracker clone's memory comes from:
	// BackendFile (the snapshot's memory file mapped privately) or
	// BackendUffd (the memory server ServePID). Empty picks BackendUffd
	// with a ServePID, else BackendFile. QEMU clones always map the file.
	MemoryBackend string
	// Publish are the clone's own -p specs.
	Publish []string
	// Labels are the clone's record's own labels (the container keeps
	// the snapshot's).
	Labels map[string]string
	// Driver, when set, restores the clone instead of the one Driver
	// returns for the snapshot's driver name (tests, tuned drivers); its
	// Name must be the snapshot's driver.
	Driver vmm.Driver
}

// The memory backends of a clone.
const (
	BackendFile = "file"
	BackendUffd = "uffd"
)

// memoryBackend checks o's backend against the snapshot m and returns it
// with the memory server's socket for BackendUffd.
func memoryBackend(dirs datadir.Dirs, m *snapshot.Manifest, o CloneOptions) (backend, socket string, err error) {
	backend = o.MemoryBackend
	if backend == "" {
		backend = BackendFile
		if o.ServePID != 0 {
			backend = BackendUffd
		}
	}
	switch backend {
	case BackendFile:
		if o.ServePID != 0 {
			return "", "", fmt.Errorf("--memory-backend file maps the snapshot's memory file itself: drop --serve %d, or drop --memory-backend to use the server", o.ServePID)
		}
		return backend, "", nil
	case BackendUffd:
	default:
		return "", "", fmt.Errorf("--memory-backend %q: use file or uffd", backend)
	}
	if o.ServePID == 0 {
		return "", "", fmt.Errorf("--memory-backend uffd needs a memory server: start one with `fcvm snapshot serve %s` and pass --serve PID", m.Tag)
	}
	srv, err := FindServe(dirs, o.ServePID)
	if err != nil {
		return "", "", err
	}
	if srv.Tag != m.Tag {
		return "", "", fmt.Errorf("--serve %d serves snapshot %s, not %s: drop TAG or pick the server of %s", o.ServePID, srv.Tag, m.Tag, m.Tag)
	}
	return backend, srv.Socket, nil
}

// restoresFrom checks that r can restore from backend.
func restoresFrom(r vmm.Restorer, backend string, m *snapshot.Manifest) error {
	if backend != BackendUffd {
		return nil
	}
	if ms, ok := r.(vmm.MemoryServerRestorer); !ok || !ms.RestoresFromMemoryServer() {
		return fmt.Errorf("--memory-backend uffd: snapshot %s was taken under %s, whose clones map its memory file privately; the memory server is for firecracker snapshots (clone it with `fcvm snapshot run %s`, without --serve or --memory-backend)", m.Tag, m.Driver, m.Tag)
	}
	return nil
}

// LaunchClone starts a clone of a snapshot: its own record, CoW disk and
// sockets, the snapshot's memory mapped privately, the guest resumed where
// the snapshot left it.
func LaunchClone(ctx context.Context, log *slog.Logger, dirs datadir.Dirs, o CloneOptions) (*VM, error) {
	t := newPhaseTimer()
	ports, err := ParsePublish(o.Publish)
	if err != nil {
		return nil, err
	}
	snaps := &snapshot.Store{Dir: dirs.Snapshots()}
	m, err := snaps.Load(o.Tag)
	if err != nil {
		return nil, err
	}
	if len(ports) > 0 && (m.Network.Mode == "" || m.Network.Mode == "none") {
		return nil, fmt.Errorf("-p: snapshot %s has no network (its VM ran with --network none)", o.Tag)
	}
	if o.VMM != "" && o.VMM != "auto" && o.VMM != m.Driver {
		return nil, fmt.Errorf("snapshot %s was taken under %s: a clone must use the same driver (drop --vmm %s)", o.Tag, m.Driver, o.VMM)
	}
	backend, uffdSocket, err := memoryBackend(dirs, m, o)
	if err != nil {
		return nil, err
	}
	driver := o.Driver
	if driver == nil {
		if driver, err = Driver(m.Driver, dirs, log); err != nil {
			return nil, err
		}
	} else if driver.Name() != m.Driver {
		return nil, fmt.Errorf("snapshot %s was taken under %s: a clone must use the same driver, not %s", o.Tag, m.Driver, driver.Name())
	}
	restorer, ok := driver.(vmm.Restorer)
	if !ok {
		return nil, fmt.Errorf("snapshot %s: driver %s cannot restore snapshots", o.Tag, m.Driver)
	}
	if err := restoresFrom(restorer, backend, m); err != nil {
		return nil, err
	}
	store, err := state.Open(dirs.VMs())
	if err != nil {
		return nil, err
	}
	t.phase("checks")
	snapDir := snaps.Path(o.Tag)
	vm, cfg, err := prepare(ctx, log, dirs, store, bootSpec{
		rec: &state.Record{
			Name:       o.Name,
			Image:      m.Image,
			ImageID:    m.ImageID,
			Cmd:        append(append([]string(nil), m.Plan.Entrypoint...), m.Plan.Cmd...),
			Driver:     m.Driver,
			CPUs:       m.CPUs,
			MemoryMiB:  m.MemoryMiB,
			Created:    time.Now(),
			Status:     state.StatusStarting,
			Supervisor: state.Self(),
			Detached:   o.Detach,
			AutoRemove: o.Remove,
			Network:    state.Network{Mode: m.Network.Mode, GuestIP: m.Network.GuestIP},
			Volumes:    m.Volumes,
			Snapshot:   o.Tag,
			ServePID:   o.ServePID,
			Labels:     o.Labels,
		},
		driver: driver,
		boot: launchInfo{Kernel: m.Kernel, Initrd: m.Initrd, Rootfs: m.Rootfs, ImageDisk: m.ImageDisk,
			// A generation no earlier guest has seen tells the agent it
			// was restored.
			Generation: m.Generation + uint64(time.Now().UnixNano()&0xffffffff) + 1},
		plan: m.Plan,
		upper: func(_ context.Context, path string) error {
			if err := storage.Clone(filepath.Join(snapDir, snapshot.DiskFile), path); err != nil {
				return fmt.Errorf("copy snapshot disk: %w", err)
			}
			return nil
		},
		ports:   ports,
		started: true,
	}, t)
	return start(vm, t, err, func() (vmm.Machine, error) {
		t.phase("network")
		mach, err := restorer.Restore(ctx, cfg, vmm.RestoreOptions{Dir: snapDir, MemFile: m.Memory(), UffdSocket: uffdSocket})
		if errors.Is(err, vmm.ErrNoMemoryServer) {
			return nil, fmt.Errorf("--memory-backend %s: snapshot %s was taken under %s, whose clones map its memory file privately (drop --memory-backend and --serve): %w", backend, o.Tag, m.Driver, err)
		}
		if err == nil {
			t.phase("restore")
		}
		return mach, err
	})
}

// SnapshotUsers lists live VMs cloned from tag.
func SnapshotUsers(dirs datadir.Dirs, tag string) ([]*state.Record, error) {
	store, err := state.Open(dirs.VMs())
	if err != nil {
		return nil, err
	}
	recs, err := store.List()
	var users []*state.Record
	for _, r := range recs {
		if r.Snapshot == tag && r.Effective().Live() {
			users = append(users, r)
		}
	}
	return users, errors.Join(err)
}
