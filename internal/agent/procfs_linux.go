package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
)

// What top, stats and cp need of the container, read from /proc and the
// OCI runtime's state (containerPID, watch_linux.go) without running
// anything in the container (its image may have no ps, no tar, no shell).

// containerRoot opens the container's root directory as its first
// process sees it: paths resolved beneath it (RESOLVE_IN_ROOT) are the
// container's, its volumes and mounts included.
func containerRoot() (*os.File, error) {
	pid, err := containerPID()
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the container's root: %w", err)
	}
	return os.NewFile(uintptr(fd), "container-root"), nil
}

// inRoot opens name beneath root as the container resolves it.
func inRoot(root *os.File, name string, flags uint64) (*os.File, error) {
	fd, err := unix.Openat2(int(root.Fd()), name, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// userHZ is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

// maxProcs bounds the processes top reports.
const maxProcs = 1024

// containerProcs lists the processes in the container's PID namespace.
func containerProcs() ([]channel.Process, error) {
	pid, err := containerPID()
	if err != nil {
		return nil, err
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return nil, fmt.Errorf("read the container's PID namespace: %w", err)
	}
	uptime := readUptime()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	type raw struct {
		channel.Process
		hostPPID int
	}
	var procs []raw
	nsPID := map[int]int{} // host PID → PID in the container
	for _, e := range ents {
		hp, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", hp)); err != nil || l != ns {
			continue
		}
		p, ppid, ok := readProc(hp, uptime)
		if !ok {
			continue
		}
		nsPID[hp] = p.PID
		procs = append(procs, raw{p, ppid})
		if len(procs) == maxProcs {
			break
		}
	}
	users := containerUsers()
	out := make([]channel.Process, 0, len(procs))
	for _, r := range procs {
		p := r.Process
		p.PPID = nsPID[r.hostPPID]
		p.User = users[p.UID]
		out = append(out, p)
	}
	// By PID, as ps lists them (/proc reads in name order: 17 before 2).
	slices.SortFunc(out, func(a, b channel.Process) int { return a.PID - b.PID })
	return out, nil
}

func readUptime() float64 {
	b, _ := os.ReadFile("/proc/uptime")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	up, _ := strconv.ParseFloat(f[0], 64)
	return up
}

// readProc reads one process from /proc: its view of itself in the
// container's namespace, and its parent's host PID.
func readProc(hp int, uptime float64) (p channel.Process, hostPPID int, ok bool) {
	dir := fmt.Sprintf("/proc/%d", hp)
	st, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return p, 0, false
	}
	// comm may hold spaces and parentheses: the fields start after the
	// last ')'.
	i := bytes.LastIndexByte(st, ')')
	if i < 0 {
		return p, 0, false
	}
	comm := string(st[bytes.IndexByte(st, '(')+1 : i])
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 20 {
		return p, 0, false
	}
	num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k], 64); return v }
	hostPPID = int(num(1))
	p.CPU = (num(11) + num(12)) / userHZ
	p.Elapsed = max(uptime-num(19)/userHZ, 0)
	p.TTY = ttyName(int(num(4)))
	p.PID = hp
	if s, err := os.ReadFile(dir + "/status"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(s))
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			fs := strings.Fields(v)
			if len(fs) == 0 {
				continue
			}
			switch k {
			case "Uid":
				p.UID, _ = strconv.Atoi(fs[0])
			case "NSpid":
				p.PID, _ = strconv.Atoi(fs[len(fs)-1])
			}
		}
	}
	cmd, _ := os.ReadFile(dir + "/cmdline")
	cmd = bytes.TrimRight(cmd, "\x00")
	if len(cmd) > 512 { // with maxProcs, a reply under channel.MaxFrame
		cmd = cmd[:512]
	}
	p.Args = string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
	if p.Args == "" {
		p.Args = "[" + comm + "]"
	}
	return p, hostPPID, true
}

// ttyName names a tty_nr as ps does: pts/N, ttyN, or "" for none.
func ttyName(nr int) string {
	major, minor := (nr>>8)&0xfff, (nr&0xff)|((nr>>12)&0xfff00)
	switch {
	case nr == 0:
		return ""
	case major >= 136 && major <= 143:
		return fmt.Sprintf("pts/%d", (major-136)*256+minor)
	case major == 4 && minor < 64:
		return fmt.Sprintf("tty%d", minor)
	case major == 4:
		return fmt.Sprintf("ttyS%d", minor-64)
	case major == 5 && minor == 1:
		return "console"
	}
	return "?"
}

// containerUsers maps UIDs to names from the container's /etc/passwd.
func containerUsers() map[int]string {
	users := map[int]string{}
	root, err := containerRoot()
	if err != nil {
		return users
	}
	defer root.Close()
	f, err := inRoot(root, "/etc/passwd", unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return users
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) < 3 {
			continue
		}
		if uid, err := strconv.Atoi(fs[2]); err == nil {
			if _, ok := users[uid]; !ok {
				users[uid] = fs[0]
			}
		}
	}
	return users
}

// top answers KindTop.
func (a *Agent) top(conn net.Conn) error {
	if _, err := a.container(); err != nil {
		return err
	}
	procs, err := containerProcs()
	if err != nil {
		return err
	}
	b, err := json.Marshal(procs)
	if err != nil {
		return err
	}
	return channel.Reply(conn, b)
}

// stats answers KindStats.
func (a *Agent) stats(conn net.Conn) error {
	var s channel.GuestStats
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 5 || !strings.HasPrefix(f[0], "cpu") {
				continue
			}
			if f[0] != "cpu" {
				s.CPUs++
				continue
			}
			for i, v := range f[1:] {
				n, _ := strconv.ParseUint(v, 10, 64)
				s.CPUTotal += n
				if i != 3 && i != 4 { // idle, iowait
					s.CPUBusy += n
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var total, avail uint64
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			n, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "MemTotal:":
				total = n << 10
			case "MemAvailable:":
				avail = n << 10
			}
		}
		s.MemTotal, s.MemUsed = total, total-min(avail, total)
	}
	if b, err := os.ReadFile("/proc/net/dev"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			name, rest, ok := strings.Cut(l, ":")
			f := strings.Fields(rest)
			if !ok || strings.TrimSpace(name) == "lo" || len(f) < 9 {
				continue
			}
			rx, _ := strconv.ParseUint(f[0], 10, 64)
			tx, _ := strconv.ParseUint(f[8], 10, 64)
			s.NetRx += rx
			s.NetTx += tx
		}
	}
	if b, err := os.ReadFile("/proc/diskstats"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			// Whole virtio disks only: partitions would count twice.
			if len(f) < 10 || !strings.HasPrefix(f[2], "vd") || strings.IndexFunc(f[2], func(r rune) bool { return r >= '0' && r <= '9' }) >= 0 {
				continue
			}
			rd, _ := strconv.ParseUint(f[5], 10, 64)
			wr, _ := strconv.ParseUint(f[9], 10, 64)
			s.BlockRead += rd * 512
			s.BlockWrite += wr * 512
		}
	}
	if _, err := a.container(); err == nil {
		if procs, err := containerProcs(); err == nil {
			s.PIDs = len(procs)
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return channel.Reply(conn, b)
}
