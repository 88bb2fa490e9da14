package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/state"
)

// live is what only the process that made a network holds: sockets,
// goroutines and the helper processes it started.
type live struct {
	sockets []sock      // ports bound but not yet served
	closers []io.Closer // proxies, the DNS socket
	wg      sync.WaitGroup
	procs   []*exec.Cmd // helpers, killed in reverse order
	logs    []*helperLog
	alive   *os.File // holder's lifeline: closing it tells the holder to exit
}

type sock struct {
	port Port
	ln   net.Listener
	pc   net.PacketConn
}

func (lv *live) start(f func()) {
	lv.wg.Add(1)
	go func() {
		defer lv.wg.Done()
		f()
	}()
}

// close releases everything: sockets first (so goroutines end), then the
// helper processes, newest first, each killed and waited for.
func (lv *live) close() error {
	var errs []error
	for _, s := range lv.sockets {
		if s.ln != nil {
			s.ln.Close()
		} else {
			s.pc.Close()
		}
	}
	for _, c := range lv.closers {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	lv.wg.Wait()
	if lv.alive != nil {
		lv.alive.Close()
	}
	for i := len(lv.procs) - 1; i >= 0; i-- {
		c := lv.procs[i]
		c.Process.Kill()
		c.Wait()
	}
	for _, l := range lv.logs {
		if err := l.drain(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Setup makes the network of one VM. It is a transaction: on error,
// everything made so far is removed before it returns.
func Setup(ctx context.Context, cfg Config) (n *Network, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	// Setup fills in the host ports the kernel picks (HostPort 0): in its
	// own copy, which n.Ports shares.
	cfg.Ports = slices.Clone(cfg.Ports)
	n = &Network{Mode: cfg.Mode, ID: cfg.ID, Ports: cfg.Ports, log: cfg.Log}
	if cfg.Mode == ModeNone {
		return n, nil
	}
	upstreams, err := upstreamsOf(cfg.DNS)
	if err != nil {
		return nil, err
	}
	if cfg.Mode != ModeNS {
		n.TAP, n.GuestIP, n.GatewayIP, n.GuestMAC, n.PrefixLen = TAPName, GuestIP, GatewayIP, GuestMAC, PrefixLen
		n.DNS = []string{GatewayIP}
	}
	lv := &live{}
	n.live = lv
	defer func() {
		if err != nil {
			if terr := n.Teardown(); terr != nil {
				err = errors.Join(err, fmt.Errorf("undo network setup: %w", terr))
			}
			n = nil
		}
	}()
	switch cfg.Mode {
	case ModeBridged:
		err = setupBridged(cfg, n, lv, upstreams)
	case ModeRootless:
		err = setupRootless(ctx, cfg, n, lv, upstreams)
	case ModeNS:
		err = setupJoined(cfg, n, upstreams)
	}
	return n, err
}

// upstreamsOf resolves the DNS servers the guest's queries go to.
func upstreamsOf(dns []string) ([]netip.AddrPort, error) {
	if dns == nil {
		b, err := os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read /etc/resolv.conf: %w", err)
		}
		dns = resolvConf(b)
	}
	var ups []netip.AddrPort
	for _, d := range dns {
		ap, err := parseUpstream(d)
		if err != nil {
			return nil, err
		}
		ups = append(ups, ap)
	}
	return ups, nil
}

// Teardown removes the network: it stops the proxies and helpers this
// process started and removes namespaces, links, nftables tables and the
// address lease. It is idempotent, and what is already gone counts as
// removed.
func (n *Network) Teardown() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tornDown {
		return nil
	}
	var errs []error
	if n.live != nil {
		errs = append(errs, n.live.close())
		n.live = nil
	}
	errs = append(errs, n.remove())
	err := errors.Join(errs...)
	if err == nil {
		n.tornDown = true
	}
	return err
}

// Reclaim removes what a network left after the process that made it died
// (fcvm gc, fcvm rm): helper processes still running (only if their PID
// still names the process that was started, by start time), the namespace,
// links, nftables table and lease. n is the Network as stored in the VM's
// record. Running it on a network that is already gone is success.
func Reclaim(n *Network) error {
	if n == nil || n.Mode == ModeNone || n.Mode == "" {
		return nil
	}
	return n.remove()
}

func (n *Network) remove() error {
	var errs []error
	for _, p := range []struct {
		name string
		proc state.Process
	}{{"helper", n.Helper}, {"holder", n.Holder}} {
		if p.proc.PID > 0 && p.proc.Alive() {
			if err := killAndWait(p.proc); err != nil {
				errs = append(errs, fmt.Errorf("stop network %s pid %d: %w", p.name, p.proc.PID, err))
			}
		}
	}
	if n.Mode == ModeNS && n.NetNS != "" {
		if err := removeJoined(n.NetNS, n.Link, n.TAP, n.Ingress); err != nil {
			errs = append(errs, err)
		}
	}
	if n.Mode == ModeBridged {
		ns := ""
		if n.NetNS != "" {
			ns = filepath.Base(n.NetNS)
		}
		if err := removeBridged(n.Link, n.Table, ns); err != nil {
			errs = append(errs, err)
		}
		if n.Lease != "" {
			ls := leases{dir: filepath.Dir(filepath.Dir(n.Lease))}
			if err := ls.release(n.Lease, n.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// killAndWait SIGKILLs a process that is not our child, through a pidfd
// so that a reused PID is never hit, and waits until it is gone (its
// parent, or init, reaps it).
func killAndWait(p state.Process) error {
	if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, state.ErrNoProcess) {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Alive() {
		if time.Now().After(deadline) {
			return errors.New("still running 5s after SIGKILL")
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// StartProcess starts cmd (the VMM) inside the VM's network namespace
// (and, rootless, its user namespace), as cmd.Start would. cmd's
// SysProcAttr (Pdeathsig in particular) is kept: bridged mode forks it from
// a thread that has entered the namespace; rootless mode runs it through
// nsenter(1), which execs it in place, so the PID, the parent and the
// parent-death signal are cmd's own.
func (n *Network) StartProcess(cmd *exec.Cmd) error {
	if cmd.Err != nil {
		return cmd.Err
	}
	switch n.Mode {
	case ModeBridged, ModeNS:
		return inNetNS(n.NetNS, cmd.Start)
	case ModeRootless:
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			return fmt.Errorf("start %s in the VM's namespace: nsenter not found: install util-linux: %w", cmd.Path, err)
		}
		args := append([]string{"nsenter", "--preserve-credentials", "--user=" + n.UserNS, "--net=" + n.NetNS, "--", cmd.Path}, cmd.Args[1:]...)
		cmd.Path, cmd.Args = nsenter, args
		return cmd.Start()
	default:
		return cmd.Start()
	}
}
