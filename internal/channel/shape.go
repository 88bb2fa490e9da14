package channel

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Shape is what podman's run flags change in the container itself (not
// the VM): capabilities, privilege, read-only root, tmpfs mounts, rlimits,
// an init, /etc/hosts and resolv.conf entries. The host checks it
// (Validate) and the guest applies it to the container's spec as podman
// would.
type Shape struct {
	CapAdd     []string `json:"cap_add,omitempty"`
	CapDrop    []string `json:"cap_drop,omitempty"`
	Privileged bool     `json:"privileged,omitempty"`
	ReadOnly   bool     `json:"read_only,omitempty"`
	// Tmpfs are podman's --tmpfs: DIR[:OPTIONS].
	Tmpfs []string `json:"tmpfs,omitempty"`
	// Ulimits are podman's --ulimit: NAME=SOFT[:HARD], -1 unlimited.
	Ulimits []string `json:"ulimits,omitempty"`
	// Init runs catatonit as the container's PID 1, as podman's --init.
	Init bool `json:"init,omitempty"`
	// AddHosts are podman's --add-host: HOST:IP.
	AddHosts []string `json:"add_hosts,omitempty"`
	// DNS are nameservers for the container's resolv.conf (--dns).
	DNS []string `json:"dns,omitempty"`
	// DNSSearch are its search domains (--dns-search; "." for none),
	// DNSOptions its options (--dns-option, e.g. ndots:5).
	DNSSearch  []string `json:"dns_search,omitempty"`
	DNSOptions []string `json:"dns_options,omitempty"`
}

// SetsDNS reports whether s changes the container's resolv.conf.
func (s *Shape) SetsDNS() bool { return len(s.DNS)+len(s.DNSSearch)+len(s.DNSOptions) > 0 }

// Limits on what a Shape may carry.
const maxShapeEntries = 256

// Capabilities are the names Linux (6.1) knows, in bit order.
var Capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// CapName is podman's spelling of a capability: upper case, with the
// CAP_ prefix; "ALL" stays.
func CapName(s string) (string, error) {
	c := strings.ToUpper(strings.TrimSpace(s))
	if c == "ALL" {
		return c, nil
	}
	if !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	if !slices.Contains(Capabilities, c) {
		return "", fmt.Errorf("unknown capability %q", s)
	}
	return c, nil
}

// Rlimits maps podman's --ulimit names to the kernel's.
var Rlimits = map[string]string{
	"as": "RLIMIT_AS", "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA",
	"fsize": "RLIMIT_FSIZE", "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK",
	"msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE",
	"nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO",
	"rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK",
}

// Ulimit parses NAME=SOFT[:HARD] (-1: unlimited) into the kernel's name
// and limits.
func Ulimit(s string) (name string, soft, hard uint64, err error) {
	k, v, ok := strings.Cut(s, "=")
	name, known := Rlimits[k]
	if !ok || !known {
		return "", 0, 0, fmt.Errorf("--ulimit %q: want NAME=SOFT[:HARD] with NAME one of core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack, as", s)
	}
	num := func(x string) (uint64, error) {
		if x == "-1" {
			return ^uint64(0), nil
		}
		return strconv.ParseUint(x, 10, 64)
	}
	sv, hv, hasHard := strings.Cut(v, ":")
	if soft, err = num(sv); err != nil {
		return "", 0, 0, fmt.Errorf("--ulimit %q: soft limit is not a number", s)
	}
	hard = soft
	if hasHard {
		if hard, err = num(hv); err != nil {
			return "", 0, 0, fmt.Errorf("--ulimit %q: hard limit is not a number", s)
		}
	}
	if soft > hard {
		return "", 0, 0, fmt.Errorf("--ulimit %q: soft limit above the hard limit", s)
	}
	return name, soft, hard, nil
}

// Validate checks s as podman checks its flags, with one-line errors that
// name the flag.
func (s *Shape) Validate() error {
	for _, l := range [][]string{s.CapAdd, s.CapDrop, s.Tmpfs, s.Ulimits, s.AddHosts, s.DNS, s.DNSSearch, s.DNSOptions} {
		if len(l) > maxShapeEntries {
			return fmt.Errorf("at most %d of each of --cap-add, --cap-drop, --tmpfs, --ulimit, --add-host, --dns, --dns-search, --dns-option", maxShapeEntries)
		}
	}
	for flag, l := range map[string][]string{"--dns-search": s.DNSSearch, "--dns-option": s.DNSOptions} {
		for _, v := range l {
			if v == "" || len(v) > 253 || strings.ContainsAny(v, " \t\r\n\x00#;") {
				return fmt.Errorf("%s %q: want one word of at most 253 characters", flag, v)
			}
		}
	}
	for flag, caps := range map[string][]string{"--cap-add": s.CapAdd, "--cap-drop": s.CapDrop} {
		for _, c := range caps {
			if _, err := CapName(c); err != nil {
				return fmt.Errorf("%s: %w", flag, err)
			}
		}
	}
	for _, t := range s.Tmpfs {
		dir, _, _ := strings.Cut(t, ":")
		if !path.IsAbs(dir) || strings.ContainsAny(t, "\x00\n") {
			return fmt.Errorf("--tmpfs %q: want an absolute CONTAINER-DIR[:OPTIONS]", t)
		}
	}
	for _, u := range s.Ulimits {
		if _, _, _, err := Ulimit(u); err != nil {
			return err
		}
	}
	for _, h := range s.AddHosts {
		name, ip, ok := strings.Cut(h, ":")
		if _, err := netip.ParseAddr(ip); !ok || name == "" || strings.ContainsAny(name, " \t\n\x00") || err != nil {
			return fmt.Errorf("--add-host %q: want HOST:IP", h)
		}
	}
	for _, d := range s.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return fmt.Errorf("--dns %q: not an IP address", d)
		}
	}
	return nil
}
