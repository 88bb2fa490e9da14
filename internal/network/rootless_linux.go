package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/state"
)

// helperTimeout bounds how long the holder and pasta may take to be ready.
const helperTimeout = 10 * time.Second

// findUserNet picks the user-mode network helper.
func findUserNet(want string) (name, path string, err error) {
	names := []string{"pasta", "slirp4netns"}
	if want != "" {
		names = []string{want}
	}
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return name, p, nil
		}
	}
	if want != "" {
		return "", "", fmt.Errorf("%w: %s not found in PATH: install it (apt-get install %s)", ErrNoUserNet, want, map[string]string{"pasta": "passt", "slirp4netns": "slirp4netns"}[want])
	}
	return "", "", fmt.Errorf("%w: neither is in PATH: install pasta (apt-get install passt) or slirp4netns (apt-get install slirp4netns), or use --network bridged as root", ErrNoUserNet)
}

func setupRootless(ctx context.Context, cfg Config, n *Network, lv *live, upstreams []netip.AddrPort) error {
	name, helperPath, err := findUserNet(cfg.UserNet)
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return fmt.Errorf("rootless network: nsenter not found: install util-linux: %w", err)
	}
	if cfg.RuntimeDir == "" {
		return errors.New("rootless network: no runtime dir for the helper's files")
	}
	udp := map[int]bool{}
	for _, p := range cfg.Ports {
		if p.HostPort == 0 {
			continue // chosen by checkFree
		}
		if p.Proto == "udp" && udp[p.HostPort] {
			return fmt.Errorf("-p %s: rootless mode publishes a UDP host port once, on one address: use one -p for port %d", p, p.HostPort)
		}
		if p.Proto == "udp" {
			udp[p.HostPort] = true
		}
	}
	if err := checkFree(cfg.Ports); err != nil {
		return err
	}
	n.UserNet = name
	if cfg.HostLoopback {
		n.HostLoopbackIP = HostLoopbackIP
	}

	// The holder and pasta start in parallel (pasta needs only the
	// holder's PID, whose namespaces exist once it is started): setup
	// takes the slower of the two, not their sum.
	hc := holderConfig{Ports: cfg.Ports, HostLoopback: cfg.HostLoopback, GuestVeth: cfg.guestVeth}
	waitHolder, err := startHolder(n, lv, hc)
	if err != nil {
		return err
	}
	var waitHelper func(context.Context) error
	switch name {
	case "pasta":
		waitHelper, err = startPasta(cfg, n, lv, helperPath)
	default:
		waitHelper, err = startSlirp(cfg, n, lv, helperPath)
	}
	if err != nil {
		return err
	}
	dnsConn, err := waitHolder(ctx)
	if err != nil {
		return err
	}
	// The guest's DNS socket is in the namespace, its forwarder here: the
	// upstreams are reached as this process reaches them, loopback ones
	// included.
	lv.closers = append(lv.closers, dnsConn)
	lv.start(newDNSForwarder(dnsConn, upstreams, cfg.Log).serve)
	return waitHelper(ctx)
}

// startHolder starts the namespace holder; the returned func waits until
// it is ready and returns the guest's DNS socket, made in the namespace.
func startHolder(n *Network, lv *live, hc holderConfig) (func(context.Context) (net.PacketConn, error), error) {
	b, _ := json.Marshal(hc)
	statusR, statusW, err := socketPair()
	if err != nil {
		return nil, err
	}
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		statusR.Close()
		statusW.Close()
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{holderArg0},
		Env:        append(os.Environ(), holderEnv+"="+string(b)),
		ExtraFiles: []*os.File{statusW, lifeR},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
			Pdeathsig:   syscall.SIGKILL,
		},
	}
	err = cmd.Start()
	statusW.Close()
	lifeR.Close()
	if err != nil {
		lifeW.Close()
		statusR.Close()
		return nil, fmt.Errorf("start network namespace holder (user namespaces disabled? see sysctl user.max_user_namespaces): %w", err)
	}
	lv.procs = append(lv.procs, cmd)
	lv.alive = lifeW
	if p, err := state.ProcessOf(cmd.Process.Pid); err == nil {
		n.Holder = p
	}
	n.NetNS = fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	n.UserNS = fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid)

	type ready struct {
		pc  net.PacketConn
		err error
	}
	done := make(chan ready, 1)
	go func() {
		pc, err := readStatus(statusR)
		statusR.Close()
		done <- ready{pc, err}
	}()
	return func(ctx context.Context) (net.PacketConn, error) {
		fail := func(err error) (net.PacketConn, error) {
			// The reader ends when the holder is killed (teardown);
			// a socket it got late is closed then.
			go func() {
				if r := <-done; r.pc != nil {
					r.pc.Close()
				}
			}()
			return nil, err
		}
		select {
		case r := <-done:
			return r.pc, r.err
		case <-ctx.Done():
			return fail(fmt.Errorf("network namespace holder: %w", ctx.Err()))
		case <-time.After(helperTimeout):
			return fail(fmt.Errorf("network namespace holder: not ready after %v", helperTimeout))
		}
	}, nil
}

// socketPair makes the holder's status socket: the holder's end as a file
// to inherit, this process's end as a connection.
func socketPair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("holder status socket: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "holder-status")
	defer mine.Close()
	c, err := net.FileConn(mine)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("holder status socket: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "holder-status"), nil
}

// pastaArgs are pasta's options for a holder: an uplink with slirp4netns's
// addresses (so both helpers look the same from the namespace), published
// ports to nsPort(i), no port of the host's loopback forwarded to the
// namespace (-T/-U none), and the gateway mapped to the host's loopback
// only if hostLoopback.
func pastaArgs(ports []Port, pidFile string, holder int, root, hostLoopback bool) []string {
	args := []string{"-f", "-q", "-4", "--config-net", "-I", uplinkName,
		"-a", uplinkIP, "-n", strconv.Itoa(uplinkLen), "-g", HostLoopbackIP,
		"--no-dhcp", "--no-ndp", "--no-dhcpv6", "--no-ra",
		"-T", "none", "-U", "none", "-P", pidFile}
	if !hostLoopback {
		args = append(args, "--no-map-gw")
	}
	if root {
		// As root pasta would switch to nobody, who may not join the
		// holder's namespaces.
		args = append([]string{"--runas", "0"}, args...)
	}
	var tcp, udp int
	for i, p := range ports {
		spec := strconv.Itoa(p.HostPort) + ":" + strconv.Itoa(nsPort(ports, i))
		if p.HostIP != "" {
			spec = p.HostIP + "/" + spec
		}
		if p.Proto == "udp" {
			args = append(args, "-u", spec)
			udp++
		} else {
			args = append(args, "-t", spec)
			tcp++
		}
	}
	if tcp == 0 {
		args = append(args, "-t", "none")
	}
	if udp == 0 {
		args = append(args, "-u", "none")
	}
	return append(args, strconv.Itoa(holder))
}

func startPasta(cfg Config, n *Network, lv *live, path string) (func(context.Context) error, error) {
	pidFile := filepath.Join(cfg.RuntimeDir, "pasta.pid")
	os.Remove(pidFile)
	logf, err := newHelperLog(filepath.Join(cfg.RuntimeDir, "pasta.log"))
	if err != nil {
		return nil, fmt.Errorf("pasta log: %w", err)
	}
	cmd := exec.Command(path, pastaArgs(cfg.Ports, pidFile, n.Holder.PID, os.Geteuid() == 0, cfg.HostLoopback)...)
	cmd.Stdout, cmd.Stderr = logf.w(), logf.w()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	logf.closeW()
	if err != nil {
		logf.drain()
		return nil, fmt.Errorf("start pasta: %w", err)
	}
	lv.procs = append(lv.procs, cmd)
	lv.logs = append(lv.logs, logf)
	if p, err := state.ProcessOf(cmd.Process.Pid); err == nil {
		n.Helper = p
	}
	return func(ctx context.Context) error {
		return waitReady(ctx, "pasta", n.Helper, func() bool {
			b, err := os.ReadFile(pidFile)
			return err == nil && len(b) > 0
		}, logf)
	}, nil
}

// waitReady polls until ready says so, the helper exits (its log is then
// the error), or time runs out.
func waitReady(ctx context.Context, name string, proc state.Process, ready func() bool, log *helperLog) error {
	deadline := time.Now().Add(helperTimeout)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		if ready() {
			return nil
		}
		if !proc.Alive() {
			return fmt.Errorf("%s exited before it was ready: %s", name, log.text())
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for %s: %w", name, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not ready after %v", name, helperTimeout)
		}
		time.Sleep(delay)
	}
}
