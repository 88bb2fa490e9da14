package agent

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/moby/sys/user"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
)

// The container's OCI bundle, as podman 4.3 (the guest's) generates it for
// `podman run --rootfs DIR:O` with the rootfs's containers.conf: what the
// container sees is podman's, without podman running. The host has
// already resolved the image config into the plan.

// defaultCaps is podman's default capability set, as the guest's
// containers-common (/usr/share/containers/containers.conf) lists it.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
	"CAP_SETUID", "CAP_SYS_CHROOT",
}

// maskedPaths and readonlyPaths are podman's.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/fs/selinux", "/sys/dev/block",
	}
	readonlyPaths = []string{
		"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
		"/proc/sysrq-trigger",
	}
)

const (
	// defaultPath is podman's PATH for an image that sets none.
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// rlimitDefault is podman's nofile and nproc for rootful containers,
	// lowered to what the kernel allows (fs.nr_open, kernel.pid_max).
	rlimitDefault = 1 << 20
	// pidsLimit is podman's default pids cgroup limit.
	pidsLimit = 2048
	// shmSize is podman's default /dev/shm size ("65536k", which podman
	// mounts as 65536000 bytes).
	shmSize = "64000k"
	// ociVersion is the spec version the guest's crun (1.8) accepts, the
	// one podman 4.3 writes.
	ociVersion = "1.0.2-dev"
)

// specInput is what the container's spec is made of besides the plan.
type specInput struct {
	// Root is the container's root directory.
	Root string
	// Files holds the hosts, hostname and resolv.conf files bound into
	// the container, and the empty .containerenv.
	Files string
	// User is the plan's user resolved against the container's passwd
	// and group files.
	User *user.ExecUser
	// Seccomp is the filter (see convertSeccomp).
	Seccomp *specs.LinuxSeccomp
	// NoFile and NProc are the rlimits (see rlimitDefault).
	NoFile, NProc uint64
	// Name is the container's name for crun, which names its cgroup;
	// "" is containerName.
	Name string
	// Join, for a pod member, is the PID of the VM's container, whose
	// network, IPC and UTS namespaces the member joins (a pod's, as
	// Kubernetes shares them).
	Join int
}

// containerSpec is the OCI runtime spec of the plan's container.
func containerSpec(p *channel.Plan, in specInput) (*specs.Spec, error) {
	args := append(append([]string(nil), p.Entrypoint...), p.Cmd...)
	if len(args) == 0 {
		return nil, errors.New("no command: the image has no entrypoint or cmd; give one after the image name")
	}
	cwd := p.Workdir
	if cwd == "" {
		cwd = "/"
	}
	proc := &specs.Process{
		Terminal:     p.TTY,
		User:         processUser(in.User),
		Args:         args,
		Env:          containerEnv(p.Env, p.Hostname, in.User.Home),
		Cwd:          cwd,
		Capabilities: processCaps(containerCaps(p.Shape), in.User.Uid),
		Rlimits: []specs.POSIXRlimit{
			{Type: "RLIMIT_NOFILE", Hard: in.NoFile, Soft: in.NoFile},
			{Type: "RLIMIT_NPROC", Hard: in.NProc, Soft: in.NProc},
		},
	}
	if p.TTY {
		proc.ConsoleSize = &specs.Box{Height: uint(max(p.Rows, 24)), Width: uint(max(p.Cols, 80))}
	}
	nosuid := []string{"nosuid", "noexec", "nodev"}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: nosuid},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "noexec", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: nosuid},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=" + shmSize}},
		{Destination: "/run/.containerenv", Type: "bind", Source: filepath.Join(in.Files, "containerenv"), Options: []string{"bind", "rprivate"}},
		{Destination: "/etc/hostname", Type: "bind", Source: filepath.Join(in.Files, "hostname"), Options: []string{"bind", "rprivate"}},
		{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(in.Files, "hosts"), Options: []string{"bind", "rprivate"}},
	}
	// podman gives a container on the host's network the host's
	// resolver, and one without a network none (the image's file stays)
	// unless --dns names one.
	if p.Network != nil || p.Shape.SetsDNS() {
		mounts = append(mounts, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: filepath.Join(in.Files, "resolv.conf"), Options: []string{"bind", "rprivate"}})
	}
	mounts = append(mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"}})
	for i, v := range p.Volumes {
		opts := []string{"rbind", "rprivate"}
		if v.ReadOnly {
			opts = append(opts, "ro")
		}
		mounts = append(mounts, specs.Mount{Destination: v.Guest, Type: "bind", Source: fmt.Sprintf("%s/%d", volumeRoot, i), Options: opts})
	}
	namespaces := []specs.LinuxNamespace{{Type: specs.PIDNamespace}}
	var sysctl map[string]string
	if p.Network == nil {
		// --network none: a namespace of its own with only loopback,
		// where podman lets no group open ICMP sockets (the VM's own
		// namespace keeps its setting, as podman's --network host).
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
		sysctl = map[string]string{"net.ipv4.ping_group_range": "0 0"}
	}
	namespaces = append(namespaces,
		specs.LinuxNamespace{Type: specs.IPCNamespace},
		specs.LinuxNamespace{Type: specs.UTSNamespace},
		specs.LinuxNamespace{Type: specs.MountNamespace},
		specs.LinuxNamespace{Type: specs.CgroupNamespace},
	)
	pids := int64(pidsLimit)
	spec := &specs.Spec{
		Version:  ociVersion,
		Process:  proc,
		Root:     &specs.Root{Path: in.Root},
		Hostname: p.Hostname,
		Mounts:   mounts,
		Linux: &specs.Linux{
			Sysctl: sysctl,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Pids:    &specs.LinuxPids{Limit: &pids},
			},
			CgroupsPath:   "/fcvm/" + cmp.Or(in.Name, containerName),
			Namespaces:    namespaces,
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
			Seccomp:       in.Seccomp,
		},
	}
	if err := applyShape(spec, p.Shape); err != nil {
		return nil, err
	}
	if in.Join > 0 {
		joinPod(spec, in.Join)
	}
	if l := p.Limits; l != nil {
		r := spec.Linux.Resources
		if l.MemoryBytes > 0 {
			r.Memory = &specs.LinuxMemory{Limit: &l.MemoryBytes}
		}
		if l.CPUQuota > 0 {
			period := cmp.Or(l.CPUPeriod, 100000)
			r.CPU = &specs.LinuxCPU{Quota: &l.CPUQuota, Period: &period}
		}
	}
	return spec, nil
}

// joinPod puts a pod member into the network, IPC and UTS namespaces of
// the process pid (the pod's first container); its PID, mount and cgroup
// namespaces stay its own. The hostname is the pod's, set already.
func joinPod(spec *specs.Spec, pid int) {
	ns := []specs.LinuxNamespace{{Type: specs.PIDNamespace}}
	for _, t := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace} {
		ns = append(ns, specs.LinuxNamespace{Type: t, Path: fmt.Sprintf("/proc/%d/ns/%s", pid, nsFile[t])})
	}
	spec.Linux.Namespaces = append(ns, specs.LinuxNamespace{Type: specs.MountNamespace}, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	spec.Hostname = ""
	delete(spec.Linux.Sysctl, "net.ipv4.ping_group_range") // the pod's network's, not the member's
}

// nsFile is each namespace's name under /proc/PID/ns.
var nsFile = map[specs.LinuxNamespaceType]string{
	specs.NetworkNamespace: "net", specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts",
}

// initPath is catatonit, podman's --init, in the guest; podman binds it to
// containerInit in the container.
const (
	initPath      = "/usr/libexec/podman/catatonit"
	containerInit = "/run/podman-init"
)

// containerCaps is the container's bounding set: podman's defaults (or
// every capability, privileged) with --cap-add and --cap-drop applied as
// podman applies them (ALL in either; a drop of ALL keeps the adds).
func containerCaps(s channel.Shape) []string {
	set := slices.Clone(defaultCaps)
	if s.Privileged {
		set = slices.Clone(channel.Capabilities)
	}
	names := func(l []string) (out []string, all bool) {
		for _, c := range l {
			n, err := channel.CapName(c)
			if err != nil {
				continue // Validate refused it on the host
			}
			if n == "ALL" {
				all = true
				continue
			}
			out = append(out, n)
		}
		return out, all
	}
	add, addAll := names(s.CapAdd)
	drop, dropAll := names(s.CapDrop)
	if addAll {
		set = slices.Clone(channel.Capabilities)
	}
	if dropAll {
		set = nil
	}
	for _, c := range add {
		if !slices.Contains(set, c) {
			set = append(set, c)
		}
	}
	if !dropAll {
		set = slices.DeleteFunc(set, func(c string) bool { return slices.Contains(drop, c) })
	}
	slices.Sort(set) // as podman lists them
	return set
}

// applyShape applies run's container flags to spec as podman does.
func applyShape(spec *specs.Spec, s channel.Shape) error {
	if s.Privileged {
		spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths = nil, nil
		spec.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		for i, m := range spec.Mounts {
			if m.Destination == "/sys" || m.Destination == "/sys/fs/cgroup" {
				spec.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "ro" })
			}
		}
	}
	tmpfs := func(dir string, opts []string) {
		has := func(l ...string) bool {
			return slices.ContainsFunc(opts, func(o string) bool { return slices.Contains(l, o) })
		}
		for _, d := range [][]string{{"rw", "ro"}, {"noexec", "exec"}, {"nosuid", "suid"}, {"nodev", "dev"}} {
			if !has(d...) {
				opts = append(opts, d[0])
			}
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: dir, Type: "tmpfs", Source: "tmpfs", Options: opts})
	}
	if s.ReadOnly {
		spec.Root.Readonly = true
		// podman's read-only-tmpfs: where programs expect to write.
		for _, d := range []string{"/run", "/tmp", "/var/tmp"} {
			tmpfs(d, []string{"rw", "exec", "nosuid", "nodev"})
		}
	}
	for _, t := range s.Tmpfs {
		dir, o, _ := strings.Cut(t, ":")
		var opts []string
		if o != "" {
			opts = strings.Split(o, ",")
		}
		tmpfs(dir, opts)
	}
	for _, u := range s.Ulimits {
		name, soft, hard, err := channel.Ulimit(u)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(spec.Process.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == name })
		if i < 0 {
			spec.Process.Rlimits = append(spec.Process.Rlimits, specs.POSIXRlimit{Type: name})
			i = len(spec.Process.Rlimits) - 1
		}
		spec.Process.Rlimits[i].Soft, spec.Process.Rlimits[i].Hard = soft, hard
	}
	if s.Init {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: containerInit, Type: "bind", Source: initPath, Options: []string{"bind", "ro"}})
		spec.Process.Args = append([]string{containerInit, "--"}, spec.Process.Args...)
	}
	return nil
}

// processUser is the spec's user for u.
func processUser(u *user.ExecUser) specs.User {
	umask := uint32(0o022)
	su := specs.User{UID: uint32(u.Uid), GID: uint32(u.Gid), Umask: &umask}
	for _, g := range u.Sgids {
		if g != u.Gid {
			su.AdditionalGids = append(su.AdditionalGids, uint32(g))
		}
	}
	return su
}

// processCaps is podman's capability sets for a process of uid: the
// bounding set always; effective and permitted only for root.
func processCaps(caps []string, uid int) *specs.LinuxCapabilities {
	c := &specs.LinuxCapabilities{Bounding: caps}
	if uid == 0 {
		c.Effective, c.Permitted = caps, caps
	}
	return c
}

// containerEnv is the plan's environment (the image's with -e applied)
// over podman's defaults, with HOSTNAME and HOME as podman adds them.
func containerEnv(env []string, hostname, home string) []string {
	out := mergeEnv([]string{defaultPath, "TERM=xterm", "container=podman"}, env)
	has := func(k string) bool {
		for _, kv := range out {
			if strings.HasPrefix(kv, k+"=") {
				return true
			}
		}
		return false
	}
	if hostname != "" && !has("HOSTNAME") {
		out = append(out, "HOSTNAME="+hostname)
	}
	if !has("HOME") {
		if home == "" {
			home = "/"
		}
		out = append(out, "HOME="+home)
	}
	return out
}

// maxUserFile bounds what is read of the container's passwd and group
// files (the image's, hostile).
const maxUserFile = 4 << 20

// resolveUser resolves spec (podman's --user: name or uid, optionally
// :group) against the passwd and group files under root, as podman does:
// an unknown numeric uid runs with gid 0 and HOME /. The files are opened
// inside root, so an image's symlinks cannot point elsewhere.
func resolveUser(root, spec string) (*user.ExecUser, error) {
	if spec == "" {
		spec = "0"
	}
	open := func(name string) io.Reader {
		dir, err := os.Open(root)
		if err != nil {
			return nil
		}
		defer dir.Close()
		fd, err := unix.Openat2(int(dir.Fd()), name, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err != nil {
			return nil
		}
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxUserFile))
		if err != nil {
			return nil
		}
		return bytes.NewReader(b)
	}
	u, err := user.GetExecUser(spec, &user.ExecUser{Home: "/"}, open("etc/passwd"), open("etc/group"))
	if err != nil {
		return nil, fmt.Errorf("resolve user %q: %w", spec, err)
	}
	return u, nil
}

// rlimitMax is a kernel limit from /proc/sys, capped at rlimitDefault.
func rlimitMax(path string) uint64 {
	b, err := os.ReadFile(path)
	var n uint64
	if err == nil {
		fmt.Sscan(string(b), &n)
	}
	if n == 0 || n > rlimitDefault {
		return rlimitDefault
	}
	return n
}

// Where the container lives in the guest.
const (
	// bundleDir is the OCI bundle (tmpfs): config.json, the files bound
	// into the container, the root's mount point.
	bundleDir = "/run/fcvm-ctr"
	// pidFile is where crun writes the container's init.
	pidFile = bundleDir + "/pid"
	// rootDiskDir holds the container root's upper and work directories
	// on the VM's writable disk (the image disk is read-only), so the
	// container's writes go to disk rather than memory.
	rootDiskDir = upperMount + "/container"
)

// bundleAt is where a container's bundle and root are made.
type bundleAt struct {
	name    string // crun's name for it
	dir     string // the bundle
	pidFile string
	lower   string // the image, mounted read-only
	disk    string // the root's upper and work directories, on the VM's disk
	files   string // hosts, hostname and resolv.conf (the VM's container's, shared by its pod)
	join    int    // a pod member: see specInput.Join
}

// mainBundle is the VM's container's.
var mainBundle = bundleAt{name: containerName, dir: bundleDir, pidFile: pidFile, lower: imageMount, disk: rootDiskDir, files: bundleDir}

// writeBundle makes the container's root (an overlay of the image on the
// upper disk) and its bundle. What the container wrote in its root before
// a stop is still in the upper directory when `fcvm start` boots the VM
// again, as podman's start keeps a container's files.
func writeBundle(p *channel.Plan, b bundleAt) error {
	root := filepath.Join(b.dir, "rootfs")
	os.Remove(b.pidFile) // its absence says crun failed (launch)
	for _, d := range []string{root, b.disk + "/upper", b.disk + "/work"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("container root: %w", err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", b.lower, b.disk, b.disk)
	if err := mount("overlay", root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("container root: %w", err)
	}
	if p.Workdir != "" {
		// podman makes a missing working directory. One that cannot be
		// made (a file is in the way) is crun's to report, as the
		// container's failure to start.
		mkdirInRoot(root, p.Workdir)
	}
	u, err := resolveUser(root, p.User)
	if err != nil {
		return err
	}
	if b.join == 0 {
		if err := writeFiles(p); err != nil {
			return err
		}
	}
	// The filter depends on the capabilities; --privileged runs without.
	var sc *specs.LinuxSeccomp
	if !p.Shape.Privileged {
		profile, err := os.ReadFile(seccompProfile)
		if err != nil {
			return fmt.Errorf("seccomp profile: %w", err)
		}
		if sc, err = convertSeccomp(profile, containerCaps(p.Shape), runtime.GOARCH, kernelRelease()); err != nil {
			return err
		}
	}
	spec, err := containerSpec(p, specInput{
		Root: root, Files: b.files, User: u, Seccomp: sc,
		NoFile: rlimitMax("/proc/sys/fs/nr_open"), NProc: rlimitMax("/proc/sys/kernel/pid_max"),
		Name: b.name, Join: b.join,
	})
	if err != nil {
		return err
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.dir, "config.json"), js, 0o600); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// writeFiles writes the files the VM's container (and its pod members)
// see as /etc/hosts, /etc/hostname and /etc/resolv.conf.
func writeFiles(p *channel.Plan) error {
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return fmt.Errorf("read /etc/hosts: %w", err)
	}
	if p.Network == nil && p.Hostname != "" {
		hosts = fmt.Appendf(hosts, "127.0.0.1\t%s\n", p.Hostname)
	}
	var added []byte
	for _, h := range p.Shape.AddHosts {
		name, ip, _ := strings.Cut(h, ":")
		added = fmt.Appendf(added, "%s\t%s\n", ip, name)
	}
	hosts = append(added, hosts...)
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	if p.Shape.SetsDNS() {
		resolv = resolvConf(resolv, p.Shape)
	}
	if p.Shape.Init {
		if _, err := os.Stat(initPath); err != nil {
			return fmt.Errorf("--init: %w", err)
		}
	}
	for name, b := range map[string][]byte{"hosts": hosts, "hostname": []byte(p.Hostname), "resolv.conf": resolv, "containerenv": nil} {
		if err := os.WriteFile(filepath.Join(bundleDir, name), b, 0o644); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
	}
	return nil
}

// resolvConf is the container's resolv.conf: the guest's, with the
// nameservers, search domains and options run's flags give in place of
// its own, as podman writes it (--dns-search . means none).
func resolvConf(base []byte, s channel.Shape) []byte {
	var ns, search, opts []string
	for _, l := range strings.Split(string(base), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			ns = append(ns, f[1])
		case "search", "domain":
			search = append(search, f[1:]...)
		case "options":
			opts = append(opts, f[1:]...)
		}
	}
	if len(s.DNS) > 0 {
		ns = s.DNS
	}
	if len(s.DNSSearch) > 0 {
		search = slices.DeleteFunc(slices.Clone(s.DNSSearch), func(d string) bool { return d == "." })
	}
	if len(s.DNSOptions) > 0 {
		opts = s.DNSOptions
	}
	var b []byte
	if len(search) > 0 {
		b = fmt.Appendf(b, "search %s\n", strings.Join(search, " "))
	}
	for _, n := range ns {
		b = fmt.Appendf(b, "nameserver %s\n", n)
	}
	if len(opts) > 0 {
		b = fmt.Appendf(b, "options %s\n", strings.Join(opts, " "))
	}
	return b
}

// mkdirInRoot makes dir and its parents inside root, resolving every
// component (the image's symlinks included) within root.
func mkdirInRoot(root, dir string) error {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rfd)
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	cur := "."
	for _, name := range strings.Split(filepath.Clean("/"+dir), "/")[1:] {
		next := filepath.Join(cur, name)
		fd, err := unix.Openat2(rfd, next, how)
		if errors.Is(err, unix.ENOENT) {
			pfd, perr := unix.Openat2(rfd, cur, how)
			if perr != nil {
				return perr
			}
			err = unix.Mkdirat(pfd, name, 0o755)
			unix.Close(pfd)
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return err
			}
			fd, err = unix.Openat2(rfd, next, how)
		}
		if err != nil {
			return err
		}
		unix.Close(fd)
		cur = next
	}
	return nil
}
