package firecracker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fcvm/fcvm/internal/vmm"
)

// These tests run the driver's real process code against the stand-in
// (the test binary serving the validating fake API): they prove the
// requests and their order, not that a VM boots.

func standinDriver(t *testing.T, mode string, o Options) (*Driver, string) {
	t.Helper()
	rec := filepath.Join(t.TempDir(), "record.jsonl")
	t.Setenv(standinEnv, mode)
	t.Setenv("FCVM_TEST_RECORD", rec)
	o.Binary = os.Args[0]
	return New(o), rec
}

func stopMachine(t *testing.T, m *Machine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Stop(ctx, 5*time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	if err := m.Wait(); err != nil {
		t.Errorf("wait: %v", err)
	}
}

func TestBootSequence(t *testing.T) {
	dir := t.TempDir()
	cfg := fullConfig(t, dir)
	d, rec := standinDriver(t, "api", Options{
		BootPlan: testPlan, Metrics: true, Entropy: true,
		Balloon:        &Balloon{AmountMiB: 0, DeflateOnOOM: true, StatsPollingIntervalS: 1},
		DiskRateLimits: map[string]*RateLimiter{"upper": {Bandwidth: &TokenBucket{Size: 50 << 20, RefillTimeMs: 1000}}},
		Log:            testLogger(t),
	})
	m, err := d.StartMachine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	calls := readRecord(t, rec)
	assertValid(t, calls)
	want := []string{
		"PUT /logger",
		"PUT /metrics",
		"PUT /machine-config",
		"PUT /boot-source",
		"PUT /drives/base",
		"PUT /drives/upper",
		"PUT /drives/image",
		"PUT /network-interfaces/eth0",
		"PUT /mmds/config",
		"PUT /mmds",
		"PUT /vsock",
		"PUT /entropy",
		"PUT /balloon",
		"PUT /actions",
	}
	if diff := cmp.Diff(want, ops(calls)); diff != "" {
		t.Fatalf("boot sequence (-want +got):\n%s", diff)
	}
	if got := bodyOf(t, calls, "PUT /actions")["action_type"]; got != "InstanceStart" {
		t.Errorf("last action %v, want InstanceStart", got)
	}
	boot := bodyOf(t, calls, "PUT /boot-source")
	if want := "console=ttyS0 reboot=k panic=1 pci=off fcvm.disks=base,upper,image fcvm.vm=vm1 quiet fcvm.channel=vsock"; boot["boot_args"] != want {
		t.Errorf("boot_args %q, want %q", boot["boot_args"], want)
	}
	if v := bodyOf(t, calls, "PUT /vsock"); v["uds_path"] != filepath.Join(dir, "vsock.sock") || v["guest_cid"] != float64(GuestCID) {
		t.Errorf("vsock %v", v)
	}
	if b := bodyOf(t, calls, "PUT /drives/base"); b["is_read_only"] != true || b["is_root_device"] != false {
		t.Errorf("base drive %v", b)
	}
	if m.VsockPath() != filepath.Join(dir, "vsock.sock") {
		t.Errorf("VsockPath %q", m.VsockPath())
	}

	// Snapshot: pause before create, resume after.
	snap := t.TempDir()
	if _, err := m.Snapshot(t.Context(), snap, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.SnapshotWith(t.Context(), snap, SnapshotOptions{Type: SnapshotDiff}); err != nil {
		t.Fatal(err)
	}
	calls = readRecord(t, rec)[len(want):]
	assertValid(t, calls)
	wantSnap := []string{"PATCH /vm", "PUT /snapshot/create", "PATCH /vm", "PATCH /vm", "PUT /snapshot/create", "PATCH /vm"}
	if diff := cmp.Diff(wantSnap, ops(calls)); diff != "" {
		t.Fatalf("snapshot sequence (-want +got):\n%s", diff)
	}
	if s := bodyOf(t, calls[:1], "PATCH /vm")["state"]; s != "Paused" {
		t.Errorf("first PATCH /vm %v, want Paused", s)
	}
	if s := bodyOf(t, calls[2:3], "PATCH /vm")["state"]; s != "Resumed" {
		t.Errorf("third PATCH /vm %v, want Resumed", s)
	}
	c := bodyOf(t, calls, "PUT /snapshot/create")
	if c["snapshot_path"] != filepath.Join(snap, SnapshotStateFile) || c["mem_file_path"] != filepath.Join(snap, SnapshotMemFile) || c["snapshot_type"] != "Full" {
		t.Errorf("snapshot create %v", c)
	}
	if s := bodyOf(t, calls[4:], "PUT /snapshot/create")["snapshot_type"]; s != "Diff" {
		t.Errorf("diff snapshot type %v", s)
	}

	stopMachine(t, m)
	calls = readRecord(t, rec)
	if last := calls[len(calls)-1]; last.Op != "PUT /actions" || bodyOf(t, calls[len(calls)-1:], "PUT /actions")["action_type"] != "SendCtrlAltDel" {
		t.Errorf("stop did not end with SendCtrlAltDel: %v", last)
	}
	if _, err := os.Stat(filepath.Join(dir, apiSocketName)); !os.IsNotExist(err) {
		t.Errorf("API socket left behind: %v", err)
	}
}

func TestBootSequenceConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := fullConfig(t, dir)
	d, rec := standinDriver(t, "api", Options{BootPlan: testPlan, ConfigFile: true})
	m, err := d.StartMachine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer stopMachine(t, m)
	calls := readRecord(t, rec)
	assertValid(t, calls)
	if diff := cmp.Diff([]string{"CONFIG-FILE", "PUT /mmds"}, ops(calls)); diff != "" {
		t.Fatalf("sequence (-want +got):\n%s", diff)
	}
}

func TestRestoreFile(t *testing.T) {
	dir := t.TempDir()
	cfg := fullConfig(t, dir)
	cfg.Net = nil
	snap := t.TempDir()
	d, rec := standinDriver(t, "api", Options{})
	m, err := d.RestoreMachine(t.Context(), cfg, RestoreOptions{Dir: snap})
	if err != nil {
		t.Fatal(err)
	}
	defer stopMachine(t, m)
	calls := readRecord(t, rec)
	assertValid(t, calls)
	want := []string{
		"GET /version",
		"PUT /logger",
		"PUT /snapshot/load",
		"PATCH /drives/base",
		"PATCH /drives/upper",
		"PATCH /drives/image",
		"PATCH /vm",
	}
	if diff := cmp.Diff(want, ops(calls)); diff != "" {
		t.Fatalf("restore sequence (-want +got):\n%s", diff)
	}
	load := bodyOf(t, calls, "PUT /snapshot/load")
	wantLoad := map[string]any{
		"snapshot_path":  filepath.Join(snap, SnapshotStateFile),
		"mem_backend":    map[string]any{"backend_type": "File", "backend_path": filepath.Join(snap, SnapshotMemFile)},
		"vsock_override": map[string]any{"uds_path": filepath.Join(dir, "vsock.sock")},
	}
	if diff := cmp.Diff(wantLoad, load); diff != "" {
		t.Errorf("load body (-want +got):\n%s", diff)
	}
	if p := bodyOf(t, calls, "PATCH /drives/upper")["path_on_host"]; p != cfg.Disks[1].Path {
		t.Errorf("upper repointed at %v, want %s", p, cfg.Disks[1].Path)
	}
	if s := bodyOf(t, calls, "PATCH /vm")["state"]; s != "Resumed" {
		t.Errorf("PATCH /vm %v", s)
	}
}

func TestRestoreUffdWithOverrides(t *testing.T) {
	dir := t.TempDir()
	cfg := minimalConfig(dir)
	cfg.Net = &vmm.Net{TAP: "tap-clone7", MAC: "06:00:ac:10:00:02"}
	snap := t.TempDir()
	uffd := filepath.Join(t.TempDir(), "uffd.sock")
	d, rec := standinDriver(t, "api", Options{BootPlan: testPlan})
	m, err := d.RestoreMachine(t.Context(), cfg, RestoreOptions{Dir: snap, UffdSocket: uffd, TrackDirtyPages: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stopMachine(t, m)
	calls := readRecord(t, rec)
	assertValid(t, calls)
	want := []string{"GET /version", "PUT /logger", "PUT /snapshot/load", "PUT /mmds"}
	if diff := cmp.Diff(want, ops(calls)); diff != "" {
		t.Fatalf("restore sequence (-want +got):\n%s", diff)
	}
	wantLoad := map[string]any{
		"snapshot_path":     filepath.Join(snap, SnapshotStateFile),
		"mem_backend":       map[string]any{"backend_type": "Uffd", "backend_path": uffd},
		"track_dirty_pages": true,
		"resume_vm":         true,
		"network_overrides": []any{map[string]any{"iface_id": "eth0", "host_dev_name": "tap-clone7"}},
		"vsock_override":    map[string]any{"uds_path": filepath.Join(dir, "vsock.sock")},
	}
	if diff := cmp.Diff(wantLoad, bodyOf(t, calls, "PUT /snapshot/load")); diff != "" {
		t.Errorf("load body (-want +got):\n%s", diff)
	}
}

func TestRestoreRefusesOldFirecracker(t *testing.T) {
	dir := t.TempDir()
	d, rec := standinDriver(t, "api", Options{})
	t.Setenv("FCVM_TEST_VERSION", "1.12.1")
	_, err := d.RestoreMachine(t.Context(), minimalConfig(dir), RestoreOptions{Dir: t.TempDir()})
	if err == nil {
		t.Fatal("restore on 1.12.1 succeeded")
	}
	t.Log(err)
	if diff := cmp.Diff([]string{"GET /version"}, ops(readRecord(t, rec))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
