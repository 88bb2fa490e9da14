package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/artifacts"
	"github.com/fcvm/fcvm/internal/datadir"
	"github.com/fcvm/fcvm/internal/firecracker"
	"github.com/fcvm/fcvm/internal/firecracker/fctest"
	"github.com/fcvm/fcvm/internal/imagetest"
	"github.com/fcvm/fcvm/internal/state"
)

// launchDirs is a data dir with stand-in guest artifacts (the stand-in
// never boots them) and a busybox OCI archive to run.
func launchDirs(t *testing.T) (datadir.Dirs, string) {
	t.Helper()
	root := t.TempDir()
	dirs := datadir.Dirs{Data: filepath.Join(root, "data"), Runtime: filepath.Join(root, "run")}
	art := dirs.Artifacts()
	if err := os.MkdirAll(art, 0o755); err != nil {
		t.Fatal(err)
	}
	set := map[string]string{"kernel": "vmlinux", "initrd": "initrd.img", "rootfs": "rootfs.ext4"}
	for k, name := range set {
		set[k] = filepath.Join(art, name)
		if err := os.WriteFile(set[k], []byte("artifact"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := json.Marshal(map[string]any{"set": set})
	if err := os.WriteFile(filepath.Join(art, "current.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(root, "busybox.tar")
	imagetest.WriteOCIArchive(t, imagetest.Busybox(t, imagetest.Options{}), archive)
	return dirs, "oci-archive:" + archive
}

// TestLaunchStandIn runs Launch's whole host side with the firecracker
// driver's real process code and the stand-in as its VMM: the record, the
// disks, the boot requests, and a teardown that leaves nothing behind.
func TestLaunchStandIn(t *testing.T) {
	dirs, ref := launchDirs(t)
	record := fctest.Env(t)
	d := firecracker.New(firecracker.Options{Binary: fctest.Binary(), DataDir: dirs.Data, Log: quietLog()})
	vm, err := Launch(context.Background(), quietLog(), dirs, Options{
		Name: "cold", Image: ref, Cmd: []string{"true"}, CPUs: 1, MemoryMiB: MinMemoryMiB,
		VMM: "auto", Network: "none", DiskMiB: 64, Driver: d,
	})
	if err != nil {
		t.Fatal(err)
	}
	calls := fctest.Calls(t, record)
	fctest.AssertValid(t, calls)
	if ops := fctest.Ops(calls); !slices.Contains(ops, "PUT /actions") || !slices.Contains(ops, "PUT /drives/upper") {
		t.Errorf("boot requests %v: want the drives and InstanceStart", ops)
	}
	var boot firecracker.BootSource
	fctest.Body(t, calls, "PUT /boot-source", &boot)
	if !strings.HasSuffix(boot.BootArgs, " fcvm.channel=vsock") {
		t.Errorf("boot_args %q: the driver adds its own channel argument", boot.BootArgs)
	}
	if !strings.Contains(boot.BootArgs, " "+artifacts.KernelArgs+" ") {
		t.Errorf("boot_args %q: want the guest kernel's own arguments %q", boot.BootArgs, artifacts.KernelArgs)
	}
	var upper firecracker.Drive
	fctest.Body(t, calls, "PUT /drives/upper", &upper)
	if upper.PathOnHost != filepath.Join(vm.Record.Dir, "upper.ext4") {
		t.Errorf("upper disk %s, want the VM's own", upper.PathOnHost)
	}
	if names := []string{"checks", "image", "record", "disks", "network", "vmm spawn"}; !slices.Equal(phaseNames(vm.Phases), names) {
		t.Errorf("phases %v, want %v", phaseNames(vm.Phases), names)
	}
	store, _ := state.Open(dirs.VMs())
	rec, err := store.Get("cold")
	// Starting until the container has started (Run records it running).
	if err != nil || rec.Status != state.StatusStarting || rec.VMM.PID != vm.Machine.PID() || rec.Driver != "firecracker" {
		t.Fatalf("record %+v, %v: want starting with the VMM's PID", rec, err)
	}
	var li launchInfo
	if b, err := os.ReadFile(filepath.Join(rec.Dir, launchFile)); err != nil || json.Unmarshal(b, &li) != nil || li.Plan == nil || li.Plan.Hostname != rec.ShortID() || li.Generation != 1 {
		t.Errorf("launch info %+v, %v", li, err)
	}
	if err := vm.Teardown(true); err != nil {
		t.Fatal(err)
	}
	assertNoVM(t, dirs, rec)
}

// TestLaunchStartFails: a VMM that cannot start leaves no record, disk or
// runtime dir behind, and the error says why.
func TestLaunchStartFails(t *testing.T) {
	dirs, ref := launchDirs(t)
	d := firecracker.New(firecracker.Options{Binary: filepath.Join(t.TempDir(), "no-firecracker"), DataDir: dirs.Data, Log: quietLog()})
	_, err := Launch(context.Background(), quietLog(), dirs, Options{
		Name: "broken", Image: ref, Cmd: []string{"true"}, CPUs: 1, MemoryMiB: MinMemoryMiB,
		VMM: "auto", Network: "none", DiskMiB: 64, Driver: d,
	})
	if err == nil || !strings.Contains(err.Error(), "no-firecracker") {
		t.Fatalf("Launch with a missing VMM binary: %v", err)
	}
	store, _ := state.Open(dirs.VMs())
	if recs, _ := store.List(); len(recs) != 0 {
		t.Errorf("records left behind: %+v", recs[0])
	}
	if ents, _ := os.ReadDir(dirs.Runtime); len(ents) != 0 {
		t.Errorf("runtime dirs left behind: %v", ents)
	}
}

// TestLaunchCloneStandIn: a clone goes through the same preparation and
// differs only in Restore; its record, disk and generation are its own.
func TestLaunchCloneStandIn(t *testing.T) {
	dirs := fcSnapshot(t)
	vm, _ := launchTestClone(t, dirs, CloneOptions{Name: "c3"})
	if names := []string{"checks", "record", "disks", "network", "restore"}; !slices.Equal(phaseNames(vm.Phases), names) {
		t.Errorf("phases %v, want %v", phaseNames(vm.Phases), names)
	}
	var li launchInfo
	if b, err := os.ReadFile(filepath.Join(vm.Record.Dir, launchFile)); err != nil || json.Unmarshal(b, &li) != nil || li.Generation != vm.Generation || li.Generation <= 1 {
		t.Errorf("clone launch info %+v (VM generation %d), %v", li, vm.Generation, err)
	}
	rec := vm.Record
	if err := vm.Teardown(true); err != nil {
		t.Fatal(err)
	}
	assertNoVM(t, dirs, rec)
}

func phaseNames(ps []Phase) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// assertNoVM fails if anything of rec is left on the host.
func assertNoVM(t *testing.T, dirs datadir.Dirs, rec *state.Record) {
	t.Helper()
	for _, p := range []string{rec.Dir, rec.RuntimeDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
	store, _ := state.Open(dirs.VMs())
	if _, err := store.Get(rec.ID); err == nil {
		t.Errorf("record %s left behind", rec.ID)
	}
}
