package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types"
	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/supervisor"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// tree makes a small rootfs: an executable, a plain file, a symlink that
// points outside the root (resolved inside it), and a directory.
func tree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"bin", "etc", "usr/local/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "bin/sh"), []byte("#!"), 0o755))
	must(os.WriteFile(filepath.Join(root, "etc/motd"), []byte("hi"), 0o644))
	must(os.Symlink("/bin/sh", filepath.Join(root, "usr/local/bin/app")))
	// /etc/passwd exists on the host and is not executable: an escape would
	// resolve it; inside the root it does not exist.
	must(os.Symlink("/../../../../etc/passwd", filepath.Join(root, "bin/escape")))
	return root
}

func TestFindCommand(t *testing.T) {
	root := tree(t)
	for _, tc := range []struct {
		args    []string
		env     []string
		cwd     string
		wantErr string
	}{
		{args: []string{"sh"}},
		{args: []string{"/bin/sh", "-c", "true"}},
		{args: []string{"app"}},               // a symlink to an absolute path, resolved in the root
		{args: []string{"./sh"}, cwd: "/bin"}, // relative to the process's cwd
		{args: []string{"sh"}, env: []string{"PATH=/usr/local/bin"}, wantErr: "executable file not found"},
		{args: []string{"nope"}, wantErr: `"nope": executable file not found in $PATH`},
		{args: []string{"/no/such/entrypoint"}, wantErr: "no such file or directory in the image"},
		{args: []string{"/etc/motd"}, wantErr: "not an executable file"},
		{args: []string{"/etc"}, wantErr: "not an executable file"},
		{args: []string{"/bin/escape"}, wantErr: "no such file or directory in the image"},
		{args: []string{"/../../bin/sh"}},
	} {
		err := findCommand(root, &specs.Process{Args: tc.args, Env: tc.env, Cwd: tc.cwd})
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: error %v, want one saying %q", tc.args, err, tc.wantErr)
		}
	}
}

func TestRootfsKey(t *testing.T) {
	dir := t.TempDir()
	l1, l2, upper := filepath.Join(dir, "l1"), filepath.Join(dir, "l2"), filepath.Join(dir, "upper")
	for _, d := range []string{l1, l2, upper} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	overlay := func(lower string) []*types.Mount {
		return []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"index=off", "workdir=" + dir, "upperdir=" + upper, "lowerdir=" + lower}}}
	}
	k1, err := rootfsKey(overlay(l1 + ":" + l2))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := rootfsKey(overlay(l1 + ":" + l2))
	other, _ := rootfsKey(overlay(l2 + ":" + l1))
	if k1 != again || k1 == other {
		t.Errorf("keys: same chain %q vs %q, reordered %q", k1, again, other)
	}
	// A layer removed and made again at the same path is another key.
	os.Remove(l2)
	os.Mkdir(l2, 0o755)
	if k, _ := rootfsKey(overlay(l1 + ":" + l2)); k == k1 {
		t.Error("a recreated layer kept its key")
	}
	if _, err := rootfsKey([]*types.Mount{{Type: "bind", Source: l1, Options: []string{"ro", "rbind"}}}); err != nil {
		t.Errorf("bind: %v", err)
	}
	if err := os.WriteFile(filepath.Join(upper, "changed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rootfsKey(overlay(l1)); err == nil || !strings.Contains(err.Error(), "holds changes") {
		t.Errorf("upper with changes: %v", err)
	}
	if _, err := rootfsKey([]*types.Mount{{Type: "zfs", Source: "pool/x"}}); err == nil {
		t.Error("zfs mount accepted")
	}
	if _, err := rootfsKey(overlay(filepath.Join(dir, "missing"))); err == nil {
		t.Error("missing layer accepted")
	}
}

func TestLaunchOptions(t *testing.T) {
	spec := &specs.Spec{Hostname: "webpod", Process: &specs.Process{
		Args: []string{"/bin/sh", "-c", "echo hi"}, Env: []string{"A=1"}, Cwd: "/srv",
		User: specs.User{UID: 1000, GID: 100}, ConsoleSize: &specs.Box{Height: 24, Width: 80},
	}}
	o, err := launchOptions(spec)
	if err != nil {
		t.Fatal(err)
	}
	if *o.Entrypoint != "/bin/sh" || strings.Join(o.Cmd, " ") != "-c echo hi" || o.User != "1000:100" || o.Hostname != "webpod" ||
		o.Workdir != "/srv" || o.Network != "none" || o.Rows != 24 || o.Cols != 80 {
		t.Errorf("options: %+v", o)
	}
	spec.Annotations = map[string]string{annotationMemory: "256", "io.containerd.other": "x"}
	if o, err := launchOptions(spec); err != nil || o.MemoryMiB != 256 {
		t.Errorf("memory annotation: %v %d", err, o.MemoryMiB)
	}
	spec.Linux = &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/pod1"}}}
	spec.Annotations = nil
	if o, err := launchOptions(spec); err != nil || o.Network != "ns:/run/netns/pod1" {
		t.Errorf("network namespace in the spec: network %q, %v; want ns:/run/netns/pod1", o.Network, err)
	}
	spec.Annotations = map[string]string{annotationNetwork: "bridged"}
	if _, err := launchOptions(spec); err == nil || !strings.Contains(err.Error(), "given the network namespace /run/netns/pod1 already") {
		t.Errorf("network annotation with a namespace in the spec: %v", err)
	}
	// CRI's resolv.conf for the pod: its nameservers (not the host's
	// loopback one), search domains and options.
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("search ns1.svc.cluster.local svc.cluster.local\nnameserver 127.0.0.53\nnameserver 10.96.0.10\noptions ndots:5\n"), 0o644)
	spec.Annotations = nil
	spec.Mounts = []specs.Mount{{Destination: "/etc/resolv.conf", Type: "bind", Source: resolv, Options: []string{"rbind", "ro"}}}
	o, err = launchOptions(spec)
	if err != nil || strings.Join(o.Shape.DNS, " ") != "10.96.0.10" || strings.Join(o.Shape.DNSSearch, " ") != "ns1.svc.cluster.local svc.cluster.local" ||
		strings.Join(o.Shape.DNSOptions, " ") != "ndots:5" {
		t.Errorf("the pod's resolv.conf: dns %v search %v options %v, %v", o.Shape.DNS, o.Shape.DNSSearch, o.Shape.DNSOptions, err)
	}
	spec.Mounts = nil
	spec.Linux = nil
	spec.Annotations = map[string]string{annotationCRIType: "sandbox"}
	if o, err := launchOptions(spec); err != nil || o.PodSlots != supervisor.MaxPodSlots {
		t.Errorf("CRI sandbox: slots %d, %v; want %d", o.PodSlots, err, supervisor.MaxPodSlots)
	}
	spec.Annotations = map[string]string{annotationCRIType: "podvm"}
	if _, err := launchOptions(spec); err == nil || !strings.Contains(err.Error(), `CRI container type "podvm"`) {
		t.Errorf("unknown CRI container type: %v", err)
	}
	for ann, want := range map[string]string{
		"fcvm.io/cpu":     "annotation fcvm.io/cpu: unknown",
		annotationCPUs:    "want a number",
		annotationNetwork: "--network",
		annotationMemory:  "want a number",
	} {
		v := "x"
		spec.Annotations = map[string]string{ann: v}
		if _, err := launchOptions(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("annotation %s=%s: error %v, want one saying %q", ann, v, err, want)
		}
	}
}

func TestReadSpec(t *testing.T) {
	dir := t.TempDir()
	if _, err := readSpec(dir); err == nil {
		t.Error("missing config.json accepted")
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"process":{"args":[]}}`), 0o644)
	if _, err := readSpec(dir); err == nil || !strings.Contains(err.Error(), "no process args") {
		t.Errorf("no args: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"process":{"args":["sh"]}}`), 0o644)
	if s, err := readSpec(dir); err != nil || s.Process.Args[0] != "sh" {
		t.Errorf("spec: %v", err)
	}
}

func TestMemberPlan(t *testing.T) {
	spec := &specs.Spec{
		Process: &specs.Process{Args: []string{"httpd", "-f"}, Env: []string{"A=1"}, Cwd: "/www", User: specs.User{UID: 33, GID: 33}},
		Mounts: []specs.Mount{
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/containerd/x/hosts", Options: []string{"rbind"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/x/shm", Options: []string{"rbind"}},
			{Destination: "/proc", Type: "proc", Source: "proc"},
		},
	}
	mem, quota, period, shares := int64(64<<20), int64(50000), uint64(100000), uint64(2)
	spec.Linux = &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &mem},
		CPU: &specs.LinuxCPU{Quota: &quota, Period: &period, Shares: &shares}}}
	p, err := memberPlan(spec, 3, true, true)
	if err != nil {
		t.Fatal(err)
	}
	if p.Limits == nil || *p.Limits != (channel.Limits{MemoryBytes: mem, CPUQuota: quota, CPUPeriod: period}) {
		t.Errorf("limits %+v, want memory and CPU quota (shares left out)", p.Limits)
	}
	spec.Linux = nil
	if strings.Join(p.Entrypoint, " ") != "httpd" || strings.Join(p.Cmd, " ") != "-f" || p.User != "33:33" || p.Workdir != "/www" ||
		p.Slot != "slot3" || !p.TTY || !p.Interactive {
		t.Errorf("plan: %+v", p)
	}
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind"}})
	if _, err := memberPlan(spec, 0, false, false); err == nil || !strings.Contains(err.Error(), "host directories in a pod's containers are not supported") {
		t.Errorf("volume bind: %v", err)
	}
}
