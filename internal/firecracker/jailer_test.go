package firecracker

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestJailer runs the driver in jailer mode with the stand-in as the
// jailer. The stand-in parses the jailer's flags and serves the API at the
// jail's socket, but does not chroot or drop privileges: what this proves is
// the arguments, the jail layout, the links and the jail-relative paths.
func TestJailer(t *testing.T) {
	dir := t.TempDir()
	cfg := fullConfig(t, dir)
	ns := newNetNS(t)
	cfg.NetNS = ns
	d, rec := standinDriver(t, "jailer", Options{Jailer: &JailerOptions{
		Binary: os.Args[0], UID: 65534, GID: 65534, CgroupVersion: 2, Cgroups: []string{"cpu.max=50000 100000"},
	}})
	m, err := d.StartMachine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "jail", filepath.Base(os.Args[0]), "vm1", "root")
	args := readArgs(t, rec)[0]
	wantArgs := []string{
		"--id", "vm1", "--exec-file", os.Args[0], "--uid", "65534", "--gid", "65534",
		"--chroot-base-dir", filepath.Join(dir, "jail"), "--netns", ns,
		"--cgroup-version", "2", "--cgroup", "cpu.max=50000 100000",
		"--", "--api-sock", "/" + apiSocketName,
	}
	if abs, _ := filepath.Abs(os.Args[0]); abs != os.Args[0] {
		wantArgs[3] = abs
	}
	if diff := cmp.Diff(wantArgs, args); diff != "" {
		t.Errorf("jailer args (-want +got):\n%s", diff)
	}
	calls := readRecord(t, rec)
	assertValid(t, calls)
	if got := bodyOf(t, calls, "PUT /boot-source")["kernel_image_path"]; got != "/vmlinux" {
		t.Errorf("kernel path %v, want jail-relative /vmlinux", got)
	}
	if got := bodyOf(t, calls, "PUT /drives/upper")["path_on_host"]; got != "/drive1-upper" {
		t.Errorf("upper path %v", got)
	}
	if got := bodyOf(t, calls, "PUT /vsock")["uds_path"]; got != "/"+vsockName {
		t.Errorf("vsock path %v", got)
	}
	if m.VsockPath() != filepath.Join(root, vsockName) {
		t.Errorf("host vsock path %s", m.VsockPath())
	}
	// Disks are linked, not copied; the writable one belongs to the jail
	// user.
	for i, disk := range cfg.Disks {
		var a, b syscall.Stat_t
		syscall.Stat(disk.Path, &a)
		if err := syscall.Stat(filepath.Join(root, "drive"+string(rune('0'+i))+"-"+disk.ID), &b); err != nil {
			t.Fatal(err)
		}
		if a.Ino != b.Ino {
			t.Errorf("%s copied into the jail, not linked", disk.ID)
		}
		if !disk.ReadOnly && (b.Uid != 65534 || b.Gid != 65534) {
			t.Errorf("%s owned by %d:%d, want the jail user", disk.ID, b.Uid, b.Gid)
		}
	}

	// A snapshot is written in the jail and moved out.
	snap := t.TempDir()
	whilePaused := false
	if mem, err := m.Snapshot(t.Context(), snap, func() error { whilePaused = true; return nil }); err != nil || mem != SnapshotMemFile {
		t.Fatalf("snapshot: memory file %q, %v", mem, err)
	}
	if !whilePaused {
		t.Error("whilePaused was not called")
	}
	for _, f := range []string{SnapshotStateFile, SnapshotMemFile} {
		if _, err := os.Stat(filepath.Join(snap, f)); err != nil {
			t.Errorf("snapshot file: %v", err)
		}
	}
	if got := bodyOf(t, readRecord(t, rec), "PUT /snapshot/create")["snapshot_path"]; got != "/snapshot-vmstate" {
		t.Errorf("snapshot path %v", got)
	}
	stopMachine(t, m)
	if m.LogPath() != filepath.Join(dir, logName) {
		t.Errorf("log at %s after exit, want it moved out of the jail", m.LogPath())
	}
	if log, _ := os.ReadFile(m.LogPath()); !strings.Contains(string(log), "stand-in log") {
		t.Errorf("moved log %q lacks the process's stderr", log)
	}
	if _, err := os.Stat(filepath.Dir(root)); !os.IsNotExist(err) {
		t.Errorf("jail not removed: %v", err)
	}
	for _, disk := range cfg.Disks {
		if _, err := os.Stat(disk.Path); err != nil {
			t.Errorf("removing the jail removed a disk: %v", err)
		}
	}

	// A clone restored in a jail needs no drive patches: its disks are
	// linked in under the snapshot's names.
	os.Remove(rec)
	m, err = d.RestoreMachine(t.Context(), cfg, RestoreOptions{Dir: snap})
	if err != nil {
		t.Fatal(err)
	}
	defer stopMachine(t, m)
	calls = readRecord(t, rec)
	assertValid(t, calls)
	if diff := cmp.Diff([]string{"GET /version", "PUT /logger", "PUT /snapshot/load"}, ops(calls)); diff != "" {
		t.Errorf("jailed restore (-want +got):\n%s", diff)
	}
	load := bodyOf(t, calls, "PUT /snapshot/load")
	if load["snapshot_path"] != "/vmstate" || load["resume_vm"] != true {
		t.Errorf("load %v", load)
	}
	if slices.ContainsFunc(ops(calls), func(s string) bool { return strings.HasPrefix(s, "PATCH") }) {
		t.Error("jailed restore patched drives")
	}
}
