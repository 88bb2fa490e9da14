package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/vmm"
)

func mustSpec(t testing.TB) *Spec {
	t.Helper()
	s, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func i64(n int64) *int64 { return &n }

// driverOptionSets are the option combinations the driver can be given.
func driverOptionSets() map[string]Options {
	limit := &RateLimiter{Bandwidth: &TokenBucket{Size: 1 << 20, RefillTimeMs: 100, OneTimeBurst: i64(1 << 22)}, Ops: &TokenBucket{Size: 1000, RefillTimeMs: 1000}}
	return map[string]Options{
		"defaults": {},
		"bootplan": {BootPlan: testPlan},
		"everything": {
			BootPlan: testPlan, Metrics: true, Entropy: true, LogLevel: "Debug", TrackDirtyPages: true,
			Balloon:        &Balloon{AmountMiB: 64, DeflateOnOOM: true, StatsPollingIntervalS: 5, FreePageHinting: true, FreePageReporting: true},
			DiskRateLimits: map[string]*RateLimiter{"base": limit, "upper": {Ops: &TokenBucket{Size: 10, RefillTimeMs: 0}}},
			NetRxRateLimit: limit, NetTxRateLimit: limit,
		},
		"jailed": {Jailer: &JailerOptions{UID: 123, GID: 100, ChrootBase: "/srv/jail"}, Binary: "/usr/bin/firecracker", BootPlan: testPlan, Metrics: true},
	}
}

func configSets(t *testing.T) map[string]vmm.Config {
	dir := t.TempDir()
	full := fullConfig(t, dir)
	noNet := full
	noNet.Net = nil
	return map[string]vmm.Config{"minimal": minimalConfig(dir), "full": full, "no-net": noNet}
}

// allRequests builds every request the driver sends, over every option
// combination, plus every standalone request the client offers.
func allRequests(t *testing.T) map[string]Request {
	t.Helper()
	out := map[string]Request{}
	add := func(prefix string, reqs []Request) {
		for i, r := range reqs {
			out[fmt.Sprintf("%s/%02d %s", prefix, i, r)] = r
		}
	}
	for cname, cfg := range configSets(t) {
		for oname, o := range driverOptionSets() {
			d := New(o)
			p, err := d.newPlan(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if o.BootPlan != nil && cfg.Net == nil {
				continue // refused before any request; see TestBadInput
			}
			boot, err := bootRequests(cfg, &o, p)
			if err != nil {
				t.Fatalf("%s/%s: %v", cname, oname, err)
			}
			add("boot/"+cname+"/"+oname, boot)
			for _, uffd := range []string{"", "/run/fcvm/snap/uffd.sock"} {
				for _, paused := range []bool{false, true} {
					ro := RestoreOptions{Dir: "/var/lib/fcvm/snapshots/t1", UffdSocket: uffd, Paused: paused, TrackDirtyPages: paused}
					p, _ := d.newPlan(cfg)
					reqs, err := restoreRequests(cfg, &o, ro, p)
					if err != nil {
						t.Fatal(err)
					}
					add(fmt.Sprintf("restore/%s/%s/uffd=%v/paused=%v", cname, oname, uffd != "", paused), append([]Request{GetVersion()}, reqs...))
				}
			}
		}
	}
	for _, typ := range []SnapshotType{SnapshotFull, SnapshotDiff} {
		add("snapshot/"+string(typ), snapshotRequests("/s/vmstate", "/s/memory", typ))
		add("snapshot/jail/"+string(typ), snapshotRequests("/snapshot-vmstate", "/snapshot-memory", typ))
	}
	limit := &RateLimiter{Bandwidth: &TokenBucket{Size: 100, RefillTimeMs: 10}}
	add("client", []Request{
		GetInstanceInfo(), GetVersion(), GetMachineConfig(), GetVMConfig(), GetMMDS(), GetBalloon(), GetBalloonStats(),
		PatchMMDS(json.RawMessage(`{"fcvm":{"generation":2}}`)),
		PatchBalloon(BalloonUpdate{AmountMiB: 256}),
		PatchDrive(PartialDrive{DriveID: "upper", RateLimiter: limit}),
		PatchDrive(PartialDrive{DriveID: "upper", PathOnHost: "/x/upper.img"}),
		PatchNetworkInterface(PartialNetworkInterface{IfaceID: IfaceID, RxRateLimiter: limit, TxRateLimiter: limit}),
		Action(ActionSendCtrlAltDel), Action(ActionFlushMetrics), Action(ActionInstanceStart),
		PatchVM(VMPaused), PatchVM(VMResumed),
		PutMachineConfig(MachineConfig{VCPUCount: 32, MemSizeMiB: 4096, SMT: true, HugePages: "2M", TrackDirtyPages: true}),
		PutMMDSConfig(MMDSConfig{Version: "V1", NetworkInterfaces: []string{IfaceID}, IPv4Address: "169.254.170.2", IMDSCompat: true}),
		PutNetworkInterface(NetworkInterface{IfaceID: IfaceID, HostDevName: "tap0", MTU: 1500}),
		PutLogger(Logger{Level: "Off"}),
		PutEntropy(EntropyDevice{RateLimiter: limit}),
		PutDrive(Drive{DriveID: "x", PathOnHost: "/x", IsReadOnly: true, CacheType: "Writeback", IOEngine: "Async"}),
	})
	return out
}

// TestContractRequests: every request the client builds, in every option
// combination the driver uses, is one the spec accepts.
func TestContractRequests(t *testing.T) {
	spec := mustSpec(t)
	reqs := allRequests(t)
	if len(reqs) < 100 {
		t.Fatalf("only %d requests enumerated", len(reqs))
	}
	ops := map[string]bool{}
	for name, r := range reqs {
		if err := spec.ValidateRequest(r); err != nil {
			body, _ := r.JSON()
			t.Errorf("%s: %v\nbody: %s", name, err, body)
		}
		if op := spec.s.Operation(r.Method, r.Path); op != "" {
			ops[op] = true
		}
	}
	t.Logf("%d requests over %d spec operations validated", len(reqs), len(ops))
}

// TestContractRejects: requests the spec forbids fail validation, with
// the field named.
func TestContractRejects(t *testing.T) {
	spec := mustSpec(t)
	raw := func(method, path, body string) Request {
		return Request{Method: method, Path: path, Body: json.RawMessage(body)}
	}
	for _, tc := range []struct {
		name  string
		req   Request
		field string
	}{
		{"zero vcpus", PutMachineConfig(MachineConfig{VCPUCount: 0, MemSizeMiB: 128}), "vcpu_count"},
		{"33 vcpus", PutMachineConfig(MachineConfig{VCPUCount: 33, MemSizeMiB: 128}), "vcpu_count"},
		{"huge pages 1G", PutMachineConfig(MachineConfig{VCPUCount: 1, MemSizeMiB: 128, HugePages: "1G"}), "huge_pages"},
		{"unknown field", raw("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":1,"vcpus":2}`), "vcpus"},
		{"no mem size", raw("PUT", "/machine-config", `{"vcpu_count":1}`), ""},
		{"drive without is_root_device", raw("PUT", "/drives/a", `{"drive_id":"a","path_on_host":"/a"}`), ""},
		{"bad cache type", PutDrive(Drive{DriveID: "a", PathOnHost: "/a", CacheType: "None"}), "cache_type"},
		{"negative bucket", PutDrive(Drive{DriveID: "a", PathOnHost: "/a", RateLimiter: &RateLimiter{Ops: &TokenBucket{Size: -1}}}), "rate_limiter.ops.size"},
		{"tiny mtu", PutNetworkInterface(NetworkInterface{IfaceID: "eth0", HostDevName: "tap0", MTU: 10}), "mtu"},
		{"cid 2", PutVsock(Vsock{GuestCID: 2, UDSPath: "/v"}), "guest_cid"},
		{"mmds v3", PutMMDSConfig(MMDSConfig{Version: "V3", NetworkInterfaces: []string{"eth0"}}), "version"},
		{"bad action", Action("Reboot"), "action_type"},
		{"bad vm state", PatchVM("Stopped"), "state"},
		{"bad snapshot type", CreateSnapshot(SnapshotCreate{SnapshotPath: "/a", MemFilePath: "/b", SnapshotType: "Incremental"}), "snapshot_type"},
		{"bad backend", LoadSnapshot(SnapshotLoad{SnapshotPath: "/a", MemBackend: MemBackend{BackendType: "Memfd", BackendPath: "/b"}}), "mem_backend.backend_type"},
		{"override without tap", raw("PUT", "/snapshot/load", `{"snapshot_path":"/a","mem_backend":{"backend_type":"File","backend_path":"/b"},"network_overrides":[{"iface_id":"eth0"}]}`), ""},
		{"bad log level", PutLogger(Logger{Level: "Verbose"}), "level"},
		{"mmds not an object", raw("PUT", "/mmds", `[1,2]`), ""},
		{"no such path", Request{Method: "PUT", Path: "/snapshot"}, ""},
		{"wrong method", Request{Method: "DELETE", Path: "/drives/a"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := spec.ValidateRequest(tc.req)
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("accepted (err %v); the spec forbids it", err)
			}
			if tc.field != "" && se.Field != tc.field {
				t.Errorf("field %q, want %q (%v)", se.Field, tc.field, err)
			}
		})
	}
}

// TestContractResponses: response and error bodies shaped as the spec
// says validate against it and decode into the client's types. (The spec
// carries no response examples, so the bodies are written here and the
// spec checks them.)
func TestContractResponses(t *testing.T) {
	spec := mustSpec(t)
	for _, tc := range []struct {
		req    Request
		status int
		body   string
		out    any
		check  func(any) bool
	}{
		{GetInstanceInfo(), 200, `{"app_name":"Firecracker","id":"vm1","state":"Running","vmm_version":"1.17.0"}`, &InstanceInfo{},
			func(v any) bool { return v.(*InstanceInfo).State == "Running" }},
		{GetInstanceInfo(), 200, `{"app_name":"Firecracker","id":"anonymous-instance","state":"Not started","vmm_version":"1.10.1"}`, &InstanceInfo{},
			func(v any) bool { return v.(*InstanceInfo).State == "Not started" }},
		{GetVersion(), 200, `{"firecracker_version":"1.17.0-dev"}`, &Version{},
			func(v any) bool { return v.(*Version).FirecrackerVersion == "1.17.0-dev" }},
		{GetMachineConfig(), 200, `{"vcpu_count":2,"mem_size_mib":512,"smt":false,"track_dirty_pages":true,"huge_pages":"None"}`, &MachineConfig{},
			func(v any) bool { return v.(*MachineConfig).MemSizeMiB == 512 }},
		{GetBalloon(), 200, `{"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":1}`, &Balloon{},
			func(v any) bool { return v.(*Balloon).AmountMiB == 64 }},
		{GetBalloonStats(), 200, `{"target_pages":10,"actual_pages":9,"target_mib":1,"actual_mib":1,"free_memory":1048576}`, &BalloonStats{},
			func(v any) bool { return v.(*BalloonStats).FreeMemory == 1<<20 }},
		{GetMMDS(), 200, `{"fcvm":{"image":"x"}}`, &map[string]any{},
			func(v any) bool { return (*v.(*map[string]any))["fcvm"] != nil }},
		{GetVMConfig(), 200, `{"boot-source":{"kernel_image_path":"/k","boot_args":"console=ttyS0"},"machine-config":{"vcpu_count":1,"mem_size_mib":128},"drives":[{"drive_id":"base","is_root_device":false,"is_read_only":true,"path_on_host":"/b"}],"vsock":{"guest_cid":3,"uds_path":"/v"}}`, &VMConfig{},
			func(v any) bool { c := v.(*VMConfig); return len(c.Drives) == 1 && c.Vsock.GuestCID == 3 }},
	} {
		if err := spec.ValidateResponse(tc.req, tc.status, []byte(tc.body)); err != nil {
			t.Errorf("%s: spec rejects response %s: %v", tc.req, tc.body, err)
			continue
		}
		if err := json.Unmarshal([]byte(tc.body), tc.out); err != nil || !tc.check(tc.out) {
			t.Errorf("%s: decode %s: %v %+v", tc.req, tc.body, err, tc.out)
		}
	}
	// A response the spec forbids is caught, so the checks above mean
	// something.
	if err := spec.ValidateResponse(GetInstanceInfo(), 200, []byte(`{"state":"Booting"}`)); err == nil {
		t.Error("spec accepted an InstanceInfo without required fields")
	}
	// Error bodies: every documented error decodes to its fault message.
	for _, r := range []Request{Action(ActionInstanceStart), LoadSnapshot(SnapshotLoad{}), GetMMDS(), GetVersion()} {
		for _, status := range []int{400, 404, 500} {
			body := `{"fault_message":"Cannot start microvm without kernel configuration."}`
			if err := spec.ValidateResponse(r, status, []byte(body)); err != nil {
				t.Errorf("%s %d: %v", r, status, err)
			}
			e := newAPIError(r, status, []byte(body))
			if e.FaultMessage != "Cannot start microvm without kernel configuration." || e.StatusCode != status {
				t.Errorf("decoded %+v", e)
			}
		}
	}
}

// serveFake runs the fake API in this process on a Unix socket.
func serveFake(t *testing.T) (*fakeAPI, *Client) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	api := newFakeAPI(mustSpec(t), "1.17.0")
	srv := &http.Server{Handler: api}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c := NewClient(sock)
	t.Cleanup(c.Close)
	return api, c
}

// TestClientInProcess: the client against the in-process fake, including
// Firecracker's ordering rules and its errors.
func TestClientInProcess(t *testing.T) {
	api, c := serveFake(t)
	ctx := context.Background()
	var info InstanceInfo
	if err := c.Do(ctx, GetInstanceInfo(), &info); err != nil || info.State != "Not started" {
		t.Fatalf("instance info %+v, %v", info, err)
	}
	// Pause before start, and snapshot while running, are refused with the
	// fault message carried through.
	err := c.Do(ctx, PatchVM(VMPaused), nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.FaultMessage, "not been started") {
		t.Fatalf("pause before start: %v", err)
	}
	if err := c.Do(ctx, Action(ActionInstanceStart), nil); !errors.As(err, &ae) || !strings.Contains(ae.FaultMessage, "kernel") {
		t.Fatalf("start without kernel: %v", err)
	}
	for _, r := range []Request{
		PutBootSource(BootSource{KernelImagePath: "/k"}),
		PutMachineConfig(MachineConfig{VCPUCount: 1, MemSizeMiB: 128}),
		Action(ActionInstanceStart),
	} {
		if err := c.Do(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Do(ctx, PutDrive(Drive{DriveID: "late", PathOnHost: "/l"}), nil); !errors.As(err, &ae) {
		t.Errorf("drive after start accepted: %v", err)
	}
	if err := c.Do(ctx, CreateSnapshot(SnapshotCreate{SnapshotPath: "/a", MemFilePath: "/b"}), nil); !errors.As(err, &ae) || !strings.Contains(ae.FaultMessage, "not paused") {
		t.Errorf("snapshot while running: %v", err)
	}
	// A spec-invalid request reaches the fake as a 400 too.
	if err := c.Do(ctx, PutMachineConfig(MachineConfig{}), nil); !errors.As(err, &ae) || !strings.Contains(ae.Error(), "vcpu_count") {
		t.Errorf("invalid request: %v", err)
	}
	if err := c.Do(ctx, PutMMDS(testPlan), nil); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := c.Do(ctx, GetMMDS(), &doc); err != nil || doc["fcvm"] == nil {
		t.Errorf("mmds round trip: %v %v", doc, err)
	}
	if n := len(api.Calls()); n != 11 {
		t.Errorf("%d calls recorded, want 11", n)
	}
}
