package supervisor

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/firecracker"
	"github.com/fcvm/fcvm/internal/firecracker/fctest"
	"github.com/fcvm/fcvm/internal/qemu"
	"github.com/fcvm/fcvm/internal/snapshot"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/vmm"
)

// These tests run fcvm's real snapshot and clone code against the
// re-executed test binary standing in for Firecracker (fctest): it serves
// a spec-validating fake of the API and never boots a VM. They show what
// fcvm asks of Firecracker, in what order, not that a guest survives it.

func TestMain(m *testing.M) {
	fctest.Main()
	os.Exit(m.Run())
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fcTestVM starts a firecracker VM with the driver's real process code
// and the stand-in as its firecracker, owned by a VM value serving its
// control socket as a supervisor does, with the files a snapshot of it
// reads. It returns the data dirs, the record, the stand-in's call record
// and how many calls the boot made.
func fcTestVM(t *testing.T, opts firecracker.Options) (datadir.Dirs, *state.Record, string, int) {
	t.Helper()
	root := t.TempDir()
	dirs := datadir.Dirs{Data: filepath.Join(root, "data"), Runtime: filepath.Join(root, "run")}
	art := filepath.Join(root, "artifacts")
	if err := os.MkdirAll(art, 0o755); err != nil {
		t.Fatal(err)
	}
	li := launchInfo{Plan: &channel.Plan{Cmd: []string{"sleep", "inf"}}, Generation: 1}
	li.Kernel, li.Rootfs, li.ImageDisk = filepath.Join(art, "vmlinux"), filepath.Join(art, "rootfs.ext4"), filepath.Join(art, "image.ext4")
	for _, p := range []string{li.Kernel, li.Rootfs, li.ImageDisk} {
		if err := os.WriteFile(p, []byte("artifact"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, err := state.Open(dirs.VMs())
	if err != nil {
		t.Fatal(err)
	}
	rec := &state.Record{
		Name: "orig", Image: "example/app", Driver: "firecracker", CPUs: 1, MemoryMiB: 64,
		Status: state.StatusRunning, Supervisor: state.Self(), Created: time.Now(),
	}
	if err := store.Create(rec); err != nil {
		t.Fatal(err)
	}
	rec.RuntimeDir = dirs.VMRuntime(rec.ID[:12])
	if _, err := store.Update(rec.ID, func(r *state.Record) error { r.RuntimeDir = rec.RuntimeDir; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(rec.RuntimeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	upper := filepath.Join(rec.Dir, "upper.ext4")
	if err := os.WriteFile(upper, []byte("the original's disk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeLaunchInfo(rec.Dir, li); err != nil {
		t.Fatal(err)
	}
	record := fctest.Env(t)
	// Each call lists the disk copies in staging dirs at that moment.
	t.Setenv(fctest.WatchEnv, filepath.Join(dirs.Snapshots(), ".tmp-*", snapshot.DiskFile))
	opts.Binary, opts.DataDir, opts.Log = fctest.Binary(), dirs.Data, quietLog()
	d := firecracker.New(opts)
	m, err := d.Start(t.Context(), vmm.Config{
		Name: rec.Name, RuntimeDir: rec.RuntimeDir, Kernel: li.Kernel, VCPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB,
		Disks: []vmm.Disk{{ID: "base", Path: li.Rootfs, ReadOnly: true}, {ID: "upper", Path: upper}, {ID: "image", Path: li.ImageDisk, ReadOnly: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(context.Background(), 0) })
	vm := &VM{Record: rec, Machine: m, log: quietLog(), store: store, dirs: dirs, driver: d, exited: make(chan struct{})}
	ctl, err := vm.serveControl(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Close() })
	booted := len(fctest.Calls(t, record))
	return dirs, rec, record, booted
}

// TestFirecrackerSnapshotCreate: `snapshot create` goes through the
// supervisor's control socket to the machine it owns.
func TestFirecrackerSnapshotCreate(t *testing.T) {
	dirs, _, record, booted := fcTestVM(t, firecracker.Options{})
	m, err := CreateSnapshot(context.Background(), quietLog(), dirs, "orig", "warm")
	if err != nil {
		t.Fatal(err)
	}
	calls := fctest.Calls(t, record)[booted:]
	fctest.AssertValid(t, calls)
	want := []string{"PATCH /vm", "PUT /snapshot/create", "PATCH /vm"}
	if got := fctest.Ops(calls); !slices.Equal(got, want) {
		t.Fatalf("requests = %v, want %v", got, want)
	}
	var pause, resume struct{ State string }
	json.Unmarshal(calls[0].Body, &pause)
	json.Unmarshal(calls[2].Body, &resume)
	if pause.State != "Paused" || resume.State != "Resumed" {
		t.Errorf("states = %q, %q, want Paused, Resumed", pause.State, resume.State)
	}
	var sc firecracker.SnapshotCreate
	fctest.Body(t, calls, "PUT /snapshot/create", &sc)
	if sc.SnapshotType != firecracker.SnapshotFull || filepath.Base(sc.SnapshotPath) != firecracker.SnapshotStateFile || filepath.Base(sc.MemFilePath) != firecracker.SnapshotMemFile {
		t.Errorf("snapshot/create = %+v, want a Full snapshot to vmstate and memory", sc)
	}
	if !strings.HasPrefix(sc.SnapshotPath, filepath.Join(dirs.Snapshots(), ".tmp-warm-")) {
		t.Errorf("snapshot written to %s, want the staging dir", sc.SnapshotPath)
	}
	// The disk is copied while the VM is paused: after the snapshot is
	// written, before the resume.
	if len(calls[1].Files) != 0 || len(calls[2].Files) != 1 {
		t.Errorf("disk copies at snapshot/create %v, at resume %v: want none, then one", calls[1].Files, calls[2].Files)
	}

	if m.Driver != "firecracker" || m.MemFile != firecracker.SnapshotMemFile || m.Memory() != "memory" {
		t.Errorf("manifest driver %q mem file %q, want firecracker, memory", m.Driver, m.MemFile)
	}
	loaded, err := (&snapshot.Store{Dir: dirs.Snapshots()}).Load("warm")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{firecracker.SnapshotStateFile, firecracker.SnapshotMemFile, snapshot.DiskFile} {
		if _, ok := loaded.Files[f]; !ok {
			t.Errorf("manifest has no digest of %s: %v", f, loaded.Files)
		}
	}
	disk, _ := os.ReadFile(filepath.Join(dirs.Snapshots(), "warm", snapshot.DiskFile))
	if string(disk) != "the original's disk" {
		t.Errorf("snapshot disk = %q", disk)
	}

	srv, err := PrepareServe(dirs, "warm")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dirs.Snapshots(), "warm", "memory"); srv.MemFile != want {
		t.Errorf("memory server serves %s, want %s", srv.MemFile, want)
	}
}

func TestFirecrackerSnapshotDiff(t *testing.T) {
	dirs, _, record, _ := fcTestVM(t, firecracker.Options{TrackDirtyPages: true})
	if _, err := CreateSnapshot(context.Background(), quietLog(), dirs, "orig", "diff"); err != nil {
		t.Fatal(err)
	}
	var sc firecracker.SnapshotCreate
	fctest.Body(t, fctest.Calls(t, record), "PUT /snapshot/create", &sc)
	if sc.SnapshotType != firecracker.SnapshotDiff {
		t.Errorf("snapshot type %q, want Diff for a VM that tracks dirty pages", sc.SnapshotType)
	}
}

// fcSnapshot makes snapshot "warm" of a stand-in VM and returns the dirs.
func fcSnapshot(t *testing.T) datadir.Dirs {
	t.Helper()
	dirs, _, _, _ := fcTestVM(t, firecracker.Options{})
	if _, err := CreateSnapshot(context.Background(), quietLog(), dirs, "orig", "warm"); err != nil {
		t.Fatal(err)
	}
	return dirs
}

// launchTestClone starts a clone with the driver's real process code, the
// stand-in as its firecracker, and returns its record and API calls.
func launchTestClone(t *testing.T, dirs datadir.Dirs, o CloneOptions) (*VM, []fctest.Call) {
	t.Helper()
	record := fctest.Env(t)
	o.Tag = "warm"
	o.Driver = firecracker.New(firecracker.Options{Binary: fctest.Binary(), DataDir: dirs.Data})
	vm, err := LaunchClone(context.Background(), quietLog(), dirs, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Teardown(true) })
	calls := fctest.Calls(t, record)
	fctest.AssertValid(t, calls)
	return vm, calls
}

func TestFirecrackerCloneFile(t *testing.T) {
	dirs := fcSnapshot(t)
	vm, calls := launchTestClone(t, dirs, CloneOptions{Name: "c1"})
	snapDir := filepath.Join(dirs.Snapshots(), "warm")
	want := []string{"GET /version", "PUT /logger", "PUT /snapshot/load",
		"PATCH /drives/base", "PATCH /drives/upper", "PATCH /drives/image", "PATCH /vm"}
	if got := fctest.Ops(calls); !slices.Equal(got, want) {
		t.Fatalf("requests = %v, want %v", got, want)
	}
	var load firecracker.SnapshotLoad
	fctest.Body(t, calls, "PUT /snapshot/load", &load)
	if load.MemBackend.BackendType != firecracker.MemBackendFile || load.MemBackend.BackendPath != filepath.Join(snapDir, "memory") {
		t.Errorf("mem_backend = %+v, want File of the snapshot's memory", load.MemBackend)
	}
	if load.SnapshotPath != filepath.Join(snapDir, "vmstate") {
		t.Errorf("snapshot_path = %s", load.SnapshotPath)
	}
	if load.VsockOverride == nil || load.VsockOverride.UDSPath != filepath.Join(vm.Record.RuntimeDir, "vsock.sock") {
		t.Errorf("vsock_override = %+v, want the clone's own socket in %s", load.VsockOverride, vm.Record.RuntimeDir)
	}
	if load.NetworkOverrides != nil {
		t.Errorf("network_overrides = %+v for a VM without network", load.NetworkOverrides)
	}
	var upper firecracker.PartialDrive
	fctest.Body(t, calls, "PATCH /drives/upper", &upper)
	if upper.PathOnHost != filepath.Join(vm.Record.Dir, "upper.ext4") {
		t.Errorf("clone's upper disk = %s, want its own copy in %s", upper.PathOnHost, vm.Record.Dir)
	}
	if d, _ := os.ReadFile(upper.PathOnHost); string(d) != "the original's disk" {
		t.Errorf("clone disk = %q", d)
	}
	var resume struct{ State string }
	json.Unmarshal(calls[len(calls)-1].Body, &resume)
	if resume.State != "Resumed" {
		t.Errorf("last request sets state %q, want Resumed", resume.State)
	}
	if vm.Record.Snapshot != "warm" || vm.Record.ServePID != 0 || vm.Record.Driver != "firecracker" {
		t.Errorf("record snapshot %q serve %d driver %q", vm.Record.Snapshot, vm.Record.ServePID, vm.Record.Driver)
	}
}

// registerServe records this test process as the memory server of tag, as
// `fcvm snapshot serve TAG` does (the socket is not served: the stand-in
// does not connect to it).
func registerServe(t *testing.T, dirs datadir.Dirs, tag string) *ServeRecord {
	t.Helper()
	srv, err := PrepareServe(dirs, tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Unregister)
	return srv
}

func TestFirecrackerCloneUffd(t *testing.T) {
	dirs := fcSnapshot(t)
	srv := registerServe(t, dirs, "warm")
	vm, calls := launchTestClone(t, dirs, CloneOptions{Name: "c2", ServePID: os.Getpid()})
	var load firecracker.SnapshotLoad
	fctest.Body(t, calls, "PUT /snapshot/load", &load)
	if load.MemBackend.BackendType != firecracker.MemBackendUffd || load.MemBackend.BackendPath != srv.Socket {
		t.Errorf("mem_backend = %+v, want Uffd at the server's socket %s", load.MemBackend, srv.Socket)
	}
	if vm.Record.ServePID != os.Getpid() {
		t.Errorf("clone's ServePID = %d, want %d", vm.Record.ServePID, os.Getpid())
	}
	store, _ := state.Open(dirs.VMs())
	if got, err := store.Get("c2"); err != nil || got.ServePID != os.Getpid() || got.Status != state.StatusRunning {
		t.Errorf("stored clone = %+v, %v", got, err)
	}
}

func TestCloneMemoryBackendBadInput(t *testing.T) {
	dirs := fcSnapshot(t)
	fc := &snapshot.Manifest{Tag: "warm", Driver: "firecracker"}
	qm := &snapshot.Manifest{Tag: "q", Driver: "qemu"}
	for _, tc := range []struct {
		name string
		m    *snapshot.Manifest
		o    CloneOptions
		want string
	}{
		{"uffd without serve", fc, CloneOptions{MemoryBackend: "uffd"}, "needs a memory server: start one with `fcvm snapshot serve warm`"},
		{"serve of a non-server", fc, CloneOptions{ServePID: 1}, "PID 1 is not a memory server"},
		{"file with serve", fc, CloneOptions{MemoryBackend: "file", ServePID: 1}, "drop --serve 1"},
		{"unknown", fc, CloneOptions{MemoryBackend: "mmap"}, `--memory-backend "mmap": use file or uffd`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := memoryBackend(dirs, tc.m, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
	// A driver without a memory server backend refuses uffd.
	if err := restoresFrom(&qemu.Driver{}, BackendUffd, qm); err == nil || !strings.Contains(err.Error(), "taken under qemu, whose clones map its memory file privately") {
		t.Errorf("qemu with uffd: %v", err)
	}
	if err := restoresFrom(firecracker.New(firecracker.Options{}), BackendUffd, fc); err != nil {
		t.Errorf("firecracker with uffd: %v", err)
	}
	// Through LaunchClone, before anything is made.
	_, err := LaunchClone(context.Background(), quietLog(), dirs, CloneOptions{Tag: "warm", MemoryBackend: "uffd"})
	if err == nil || !strings.Contains(err.Error(), "needs a memory server") {
		t.Errorf("LaunchClone uffd without serve: %v", err)
	}
	store, _ := state.Open(dirs.VMs())
	if recs, _ := store.List(); len(recs) != 1 {
		t.Errorf("%d VM records after a refused clone, want only the original", len(recs))
	}
}

// TestCloneQemuSnapshotThroughServer: a memory server of a snapshot whose
// driver cannot take one is refused before anything is made.
func TestCloneQemuSnapshotThroughServer(t *testing.T) {
	dirs := fcSnapshot(t)
	path := filepath.Join(dirs.Snapshots(), "warm", snapshot.ManifestFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	m["driver"] = "qemu"
	b, _ = json.Marshal(m)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	registerServe(t, dirs, "warm")
	_, err = LaunchClone(context.Background(), quietLog(), dirs, CloneOptions{Tag: "warm", ServePID: os.Getpid(), Driver: &qemu.Driver{}})
	if err == nil || !strings.Contains(err.Error(), "the memory server is for firecracker snapshots") {
		t.Fatalf("clone of a qemu snapshot through a memory server: %v", err)
	}
	store, _ := state.Open(dirs.VMs())
	if recs, _ := store.List(); len(recs) != 1 {
		t.Errorf("%d VM records after a refused clone, want only the original", len(recs))
	}
}
