package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/moby/sys/user"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fcvm/fcvm/internal/channel"
)

// fixtureRoot is a container root with passwd and group files.
func fixtureRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n",
		"etc/group":  "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nwww:x:33:web\naudio:x:29:app\n",
	}
	for name, body := range files {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestResolveUser: --user as podman resolves it against the image's files.
func TestResolveUser(t *testing.T) {
	root := fixtureRoot(t)
	for _, tc := range []struct {
		spec string
		want user.ExecUser
	}{
		{"", user.ExecUser{Uid: 0, Gid: 0, Sgids: []int{10}, Home: "/root"}},
		{"root", user.ExecUser{Uid: 0, Gid: 0, Sgids: []int{10}, Home: "/root"}},
		{"app", user.ExecUser{Uid: 1000, Gid: 1000, Sgids: []int{10, 29}, Home: "/home/app"}},
		{"1000", user.ExecUser{Uid: 1000, Gid: 1000, Sgids: []int{10, 29}, Home: "/home/app"}},
		// A group given replaces the user's groups.
		{"app:www", user.ExecUser{Uid: 1000, Gid: 33, Home: "/home/app"}},
		{"33:0", user.ExecUser{Uid: 33, Gid: 0, Home: "/var/www"}},
		// A uid the image does not know runs with gid 0 and HOME /.
		{"4242", user.ExecUser{Uid: 4242, Gid: 0, Home: "/"}},
		{"4242:4343", user.ExecUser{Uid: 4242, Gid: 4343, Home: "/"}},
	} {
		got, err := resolveUser(root, tc.spec)
		if err != nil {
			t.Errorf("resolveUser(%q): %v", tc.spec, err)
			continue
		}
		if got.Uid != tc.want.Uid || got.Gid != tc.want.Gid || got.Home != tc.want.Home || !slices.Equal(got.Sgids, tc.want.Sgids) {
			t.Errorf("resolveUser(%q) = %+v, want %+v", tc.spec, *got, tc.want)
		}
	}
	for _, bad := range []string{"nosuch", "app:nosuch"} {
		if _, err := resolveUser(root, bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("resolveUser(%q): want an error naming it, got %v", bad, err)
		}
	}
	// The files are read inside the root: an absolute symlink in the
	// image names the image's own file, never the guest's.
	evil := t.TempDir()
	os.MkdirAll(filepath.Join(evil, "etc"), 0o755)
	os.WriteFile(filepath.Join(evil, "real-passwd"), []byte("svc:x:77:77::/srv:/bin/sh\n"), 0o644)
	os.Symlink("/real-passwd", filepath.Join(evil, "etc/passwd"))
	if u, err := resolveUser(evil, "svc"); err != nil || u.Uid != 77 {
		t.Errorf("resolveUser through an in-image symlink: %+v, %v", u, err)
	}
	if _, err := resolveUser(evil, "root"); err == nil {
		t.Error("the guest's /etc/passwd was read through the image's symlink")
	}
}

// TestContainerSpec: the bundle carries podman's defaults and the plan.
func TestContainerSpec(t *testing.T) {
	root := fixtureRoot(t)
	u, err := resolveUser(root, "app")
	if err != nil {
		t.Fatal(err)
	}
	plan := &channel.Plan{
		Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"},
		Env:     []string{"PATH=/usr/bin:/bin", "FOO=bar"},
		Workdir: "/srv", Hostname: "abc123", TTY: true, Rows: 40, Cols: 120,
		Volumes: []channel.VolumePlan{{Guest: "/data"}, {Guest: "/ro", ReadOnly: true}},
	}
	sc := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	s, err := containerSpec(plan, specInput{Root: "/r", Files: "/f", User: u, Seccomp: sc, NoFile: 1 << 20, NProc: 32768})
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if !slices.Equal(p.Args, []string{"/bin/sh", "-c", "echo hi"}) || p.Cwd != "/srv" || !p.Terminal || p.ConsoleSize == nil || p.ConsoleSize.Height != 40 || p.ConsoleSize.Width != 120 {
		t.Errorf("process %+v", p)
	}
	if want := []string{"PATH=/usr/bin:/bin", "TERM=xterm", "container=podman", "FOO=bar", "HOSTNAME=abc123", "HOME=/home/app"}; !slices.Equal(p.Env, want) {
		t.Errorf("env %q, want %q", p.Env, want)
	}
	if p.User.UID != 1000 || p.User.GID != 1000 || !slices.Equal(p.User.AdditionalGids, []uint32{10, 29}) || p.User.Umask == nil || *p.User.Umask != 0o022 {
		t.Errorf("user %+v", p.User)
	}
	// podman: a user other than root keeps the bounding set only.
	if !slices.Equal(p.Capabilities.Bounding, defaultCaps) || len(p.Capabilities.Effective)+len(p.Capabilities.Permitted)+len(p.Capabilities.Inheritable)+len(p.Capabilities.Ambient) != 0 {
		t.Errorf("capabilities for uid 1000: %+v", p.Capabilities)
	}
	if p.NoNewPrivileges {
		t.Error("no_new_privileges set; podman leaves it off")
	}
	if want := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1 << 20, Soft: 1 << 20}, {Type: "RLIMIT_NPROC", Hard: 32768, Soft: 32768}}; !reflect.DeepEqual(p.Rlimits, want) {
		t.Errorf("rlimits %+v", p.Rlimits)
	}
	if s.Root.Path != "/r" || s.Root.Readonly || s.Hostname != "abc123" {
		t.Errorf("root %+v hostname %q", s.Root, s.Hostname)
	}
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	for dst, want := range map[string]string{
		"/proc": "proc", "/dev": "tmpfs", "/sys": "sysfs", "/dev/pts": "devpts", "/dev/mqueue": "mqueue",
		"/dev/shm": "tmpfs", "/sys/fs/cgroup": "cgroup", "/etc/hosts": "bind", "/etc/hostname": "bind",
		"/run/.containerenv": "bind", "/data": "bind", "/ro": "bind",
	} {
		if mounts[dst].Type != want {
			t.Errorf("mount %s: %+v, want type %s", dst, mounts[dst], want)
		}
	}
	if !slices.Contains(mounts["/sys"].Options, "ro") || !slices.Contains(mounts["/dev/shm"].Options, "size=64000k") || !slices.Contains(mounts["/sys/fs/cgroup"].Options, "ro") {
		t.Errorf("/sys, /dev/shm or cgroup options: %v %v %v", mounts["/sys"].Options, mounts["/dev/shm"].Options, mounts["/sys/fs/cgroup"].Options)
	}
	if mounts["/etc/hosts"].Source != "/f/hosts" || mounts["/data"].Source != volumeRoot+"/0" || slices.Contains(mounts["/data"].Options, "ro") || !slices.Contains(mounts["/ro"].Options, "ro") {
		t.Errorf("bind sources or volume options: %+v %+v %+v", mounts["/etc/hosts"], mounts["/data"], mounts["/ro"])
	}
	// --network none: its own namespace and the image's resolv.conf.
	if _, ok := mounts["/etc/resolv.conf"]; ok {
		t.Error("resolv.conf bound without a network")
	}
	ns := func(s *specs.Spec) []specs.LinuxNamespaceType {
		var out []specs.LinuxNamespaceType
		for _, n := range s.Linux.Namespaces {
			out = append(out, n.Type)
		}
		return out
	}
	if want := []specs.LinuxNamespaceType{"pid", "network", "ipc", "uts", "mount", "cgroup"}; !slices.Equal(ns(s), want) {
		t.Errorf("namespaces %v, want %v", ns(s), want)
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") || s.Linux.Seccomp != sc {
		t.Errorf("masked %v readonly %v seccomp %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Linux.Seccomp)
	}
	if r := s.Linux.Resources; r == nil || r.Pids == nil || *r.Pids.Limit != 2048 {
		t.Errorf("resources %+v", r)
	}

	// Root, with the host's network: full capabilities, the VM's network
	// namespace and its resolver; PATH and HOME from podman's defaults.
	root0, _ := resolveUser(root, "")
	plan = &channel.Plan{Cmd: []string{"true"}, Network: &channel.NetPlan{Address: "172.30.0.2/30"}}
	s, err = containerSpec(plan, specInput{Root: "/r", Files: "/f", User: root0, NoFile: 1, NProc: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{defaultPath, "TERM=xterm", "container=podman", "HOME=/root"}; !slices.Equal(s.Process.Env, want) {
		t.Errorf("env %q, want %q", s.Process.Env, want)
	}
	if c := s.Process.Capabilities; !slices.Equal(c.Effective, defaultCaps) || !slices.Equal(c.Permitted, defaultCaps) || len(c.Inheritable) != 0 {
		t.Errorf("root's capabilities: %+v", c)
	}
	if s.Process.Cwd != "/" || s.Process.Terminal || s.Process.ConsoleSize != nil || !slices.Equal(s.Process.User.AdditionalGids, []uint32{10}) {
		t.Errorf("process %+v", s.Process)
	}
	if slices.Contains(ns(s), specs.NetworkNamespace) || len(s.Linux.Sysctl) != 0 {
		t.Errorf("a network namespace or net sysctls %v with the host's network", s.Linux.Sysctl)
	}
	found := false
	for _, m := range s.Mounts {
		found = found || m.Destination == "/etc/resolv.conf" && m.Source == "/f/resolv.conf"
	}
	if !found {
		t.Error("resolv.conf not bound with the host's network")
	}
	if _, err := containerSpec(&channel.Plan{}, specInput{User: root0}); err == nil || !strings.Contains(err.Error(), "no command") {
		t.Errorf("a plan without a command: %v", err)
	}
}

// TestConvertSeccomp: the guest's profile resolves to the filter podman
// put in the container's config.json in the same guest (captured from
// podman 4.3.1 with its default capabilities on x86-64, kernel 6.1).
func TestConvertSeccomp(t *testing.T) {
	profile, err := os.ReadFile("testdata/seccomp.json")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/podman-seccomp.json")
	if err != nil {
		t.Fatal(err)
	}
	// Compared as crun reads them: JSON, with empty and absent lists alike.
	var want specs.LinuxSeccomp
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	wb, _ := json.Marshal(want)
	got, err := convertSeccomp(profile, defaultCaps, "amd64", "6.1.0-50-amd64")
	if err != nil {
		t.Fatal(err)
	}
	if gb, _ := json.Marshal(got); string(gb) != string(wb) {
		t.Errorf("filter differs from podman's:\n got %s\nwant %s", gb, wb)
	}
	// A capability adds what its rules allow.
	admin, _ := convertSeccomp(profile, append(slices.Clone(defaultCaps), "CAP_SYS_ADMIN"), "amd64", "6.1.0")
	allowed := func(s *specs.LinuxSeccomp, name string) bool {
		for _, r := range s.Syscalls {
			if r.Action == specs.ActAllow && len(r.Args) == 0 && slices.Contains(r.Names, name) {
				return true
			}
		}
		return false
	}
	if allowed(got, "bpf") || !allowed(admin, "bpf") {
		t.Errorf("bpf allowed: default %v, with CAP_SYS_ADMIN %v", allowed(got, "bpf"), allowed(admin, "bpf"))
	}
	if _, err := convertSeccomp([]byte("{"), nil, "amd64", "6.1"); err == nil {
		t.Error("a broken profile converted")
	}
}

func TestKernelAtLeast(t *testing.T) {
	for _, tc := range []struct {
		release, min string
		want         bool
	}{
		{"6.1.0-50-amd64", "4.8", true}, {"4.8.0", "4.8", true}, {"4.7.10", "4.8", false},
		{"5.10.0+", "5.10", true}, {"3.10", "4.14", false},
	} {
		if got := kernelAtLeast(tc.release, tc.min); got != tc.want {
			t.Errorf("kernelAtLeast(%q, %q) = %v", tc.release, tc.min, got)
		}
	}
}

// TestMkdirInRoot: a missing working directory is made inside the root,
// even through the image's symlinks.
func TestMkdirInRoot(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := mkdirInRoot(root, "/a/b/c"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, "a/b/c")); err != nil || !fi.IsDir() {
		t.Errorf("a/b/c: %v", err)
	}
	// An absolute symlink names a path in the root.
	os.Symlink("/a/b", filepath.Join(root, "link"))
	if err := mkdirInRoot(root, "/link/d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a/b/d")); err != nil {
		t.Errorf("through an absolute symlink: %v", err)
	}
	// One naming a directory of the guest's never reaches it.
	os.Symlink(outside, filepath.Join(root, "escape"))
	os.Symlink("../../..", filepath.Join(root, "up"))
	mkdirInRoot(root, "/escape/x")
	mkdirInRoot(root, "/up/"+outside+"/y")
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("made %v outside the root", ents)
	}
}

// TestShape: run's container flags change the spec as podman's do.
func TestShape(t *testing.T) {
	for _, tc := range []struct {
		shape channel.Shape
		want  []string
	}{
		{channel.Shape{}, defaultCaps},
		{channel.Shape{CapAdd: []string{"net_raw", "CAP_SYS_ADMIN"}, CapDrop: []string{"chown", "KILL"}},
			[]string{"CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_ADMIN", "CAP_SYS_CHROOT"}},
		{channel.Shape{CapDrop: []string{"all"}, CapAdd: []string{"setuid"}}, []string{"CAP_SETUID"}},
		{channel.Shape{CapDrop: []string{"ALL"}}, nil},
	} {
		if got := containerCaps(tc.shape); !slices.Equal(got, tc.want) {
			t.Errorf("caps for %+v: %v, want %v", tc.shape, got, tc.want)
		}
	}
	if got := containerCaps(channel.Shape{Privileged: true}); len(got) != len(channel.Capabilities) {
		t.Errorf("privileged: %d capabilities, want all %d", len(got), len(channel.Capabilities))
	}
	if got := containerCaps(channel.Shape{CapAdd: []string{"ALL"}, CapDrop: []string{"mknod"}}); len(got) != len(channel.Capabilities)-1 || slices.Contains(got, "CAP_MKNOD") {
		t.Errorf("ALL less mknod: %v", got)
	}

	root0 := &user.ExecUser{Home: "/root"}
	plan := &channel.Plan{Cmd: []string{"sleep", "1"}, Shape: channel.Shape{
		Privileged: true, ReadOnly: true, Init: true,
		Tmpfs:   []string{"/scratch", "/big:size=1m,exec"},
		Ulimits: []string{"nofile=100:200", "core=-1", "nproc=50"},
		DNS:     []string{"192.0.2.53"},
	}}
	s, err := containerSpec(plan, specInput{Root: "/r", Files: "/f", User: root0, NoFile: 1 << 20, NProc: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Root.Readonly || s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil || !s.Linux.Resources.Devices[0].Allow {
		t.Errorf("read-only %v masked %v readonly %v devices %+v", s.Root.Readonly, s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Linux.Resources.Devices)
	}
	if !slices.Equal(s.Process.Args, []string{containerInit, "--", "sleep", "1"}) {
		t.Errorf("--init args %q", s.Process.Args)
	}
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	for dst, want := range map[string][]string{
		"/scratch": {"rw", "noexec", "nosuid", "nodev"},
		"/big":     {"size=1m", "exec", "rw", "nosuid", "nodev"},
		"/tmp":     {"rw", "exec", "nosuid", "nodev"},
		"/sys":     {"nosuid", "noexec", "nodev"},
	} {
		if !slices.Equal(mounts[dst].Options, want) {
			t.Errorf("mount %s options %v, want %v", dst, mounts[dst].Options, want)
		}
	}
	if mounts[containerInit].Source != initPath || mounts["/etc/resolv.conf"].Source != "/f/resolv.conf" {
		t.Errorf("init %+v resolv.conf %+v", mounts[containerInit], mounts["/etc/resolv.conf"])
	}
	want := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 100, Hard: 200}, {Type: "RLIMIT_NPROC", Soft: 50, Hard: 50}, {Type: "RLIMIT_CORE", Soft: ^uint64(0), Hard: ^uint64(0)}}
	if !reflect.DeepEqual(s.Process.Rlimits, want) {
		t.Errorf("rlimits %+v, want %+v", s.Process.Rlimits, want)
	}
}

// TestPodMemberSpec: a pod member joins the pod's network, IPC and UTS
// namespaces by path, keeps PID, mount and cgroup namespaces of its own,
// lives in a cgroup named for it, and leaves the pod's hostname alone.
func TestPodMemberSpec(t *testing.T) {
	root0 := &user.ExecUser{Home: "/root"}
	plan := &channel.Plan{Cmd: []string{"sleep", "1"}, Hostname: "pod"}
	s, err := containerSpec(plan, specInput{Root: "/r", Files: "/f", User: root0, NoFile: 1, NProc: 1, Name: "c1", Join: 42})
	if err != nil {
		t.Fatal(err)
	}
	got := map[specs.LinuxNamespaceType]string{}
	for _, ns := range s.Linux.Namespaces {
		got[ns.Type] = ns.Path
	}
	want := map[specs.LinuxNamespaceType]string{
		specs.PIDNamespace: "", specs.MountNamespace: "", specs.CgroupNamespace: "",
		specs.NetworkNamespace: "/proc/42/ns/net", specs.IPCNamespace: "/proc/42/ns/ipc", specs.UTSNamespace: "/proc/42/ns/uts",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("namespaces %v, want %v", got, want)
	}
	if s.Linux.CgroupsPath != "/fcvm/c1" || s.Hostname != "" || s.Linux.Sysctl["net.ipv4.ping_group_range"] != "" {
		t.Errorf("cgroup %q hostname %q sysctl %v", s.Linux.CgroupsPath, s.Hostname, s.Linux.Sysctl)
	}
	s, _ = containerSpec(plan, specInput{Root: "/r", Files: "/f", User: root0, NoFile: 1, NProc: 1})
	if s.Linux.CgroupsPath != "/fcvm/"+containerName || s.Hostname != "pod" {
		t.Errorf("the VM's container: cgroup %q hostname %q", s.Linux.CgroupsPath, s.Hostname)
	}
}

func TestResolvConf(t *testing.T) {
	base := []byte("# from the host\nsearch a.test b.test\nnameserver 10.0.0.1\nnameserver 10.0.0.2\noptions ndots:1\n")
	for _, c := range []struct {
		shape channel.Shape
		want  string
	}{
		{channel.Shape{DNS: []string{"192.0.2.53"}}, "search a.test b.test\nnameserver 192.0.2.53\noptions ndots:1\n"},
		{channel.Shape{DNSSearch: []string{"svc.test", "cluster.test"}}, "search svc.test cluster.test\nnameserver 10.0.0.1\nnameserver 10.0.0.2\noptions ndots:1\n"},
		{channel.Shape{DNSSearch: []string{"."}, DNSOptions: []string{"ndots:5", "timeout:2"}}, "nameserver 10.0.0.1\nnameserver 10.0.0.2\noptions ndots:5 timeout:2\n"},
	} {
		if got := string(resolvConf(base, c.shape)); got != c.want {
			t.Errorf("%+v: got\n%s\nwant\n%s", c.shape, got, c.want)
		}
	}
}

// TestMemberLimits: a pod member's limits become its cgroup's.
func TestMemberLimits(t *testing.T) {
	plan := &channel.Plan{Cmd: []string{"sleep", "1"}, Limits: &channel.Limits{MemoryBytes: 64 << 20, CPUQuota: 50000}}
	s, err := containerSpec(plan, specInput{Root: "/r", Files: "/f", User: &user.ExecUser{Home: "/root"}, NoFile: 1, NProc: 1, Name: "c1", Join: 42})
	if err != nil {
		t.Fatal(err)
	}
	r := s.Linux.Resources
	if r.Memory == nil || *r.Memory.Limit != 64<<20 || r.CPU == nil || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 {
		t.Errorf("resources %+v", r)
	}
}
