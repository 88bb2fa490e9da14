package network

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// holderEnv carries a rootless holder's configuration (JSON) to the
// re-executed binary.
const holderEnv = "FCVM_NETNS_HOLDER"

// holderArg0 is how a holder shows in ps.
const holderArg0 = "fcvm-netns-holder"

type holderConfig struct {
	Ports []Port `json:"ports"`
	// HostLoopback: the guest may reach the host's loopback at
	// HostLoopbackIP (Config.HostLoopback).
	HostLoopback bool `json:"host_loopback,omitempty"`
	GuestVeth    bool `json:"guest_veth,omitempty"`
}

// The holder's inherited descriptors: it reports "ok" or the error on
// statusFD, a Unix socket, passing with "ok" the guest's DNS socket (made
// in the namespace: the forwarder runs in the process that started the
// holder, so that upstreams on the host's loopback are reached without
// opening the host's loopback to the namespace), and exits when lifelineFD
// reaches EOF (the process that started it closed its end, or died).
const (
	statusFD   = 3
	lifelineFD = 4
)

// MaybeRunHolder turns this process into a rootless network namespace
// holder if it was started as one, and never returns then. fcvm's main
// (and any test binary that sets up rootless networks) must call it first
// thing: rootless mode re-executes /proc/self/exe in a new user and network
// namespace, because a multithreaded Go process cannot enter a user
// namespace, and configures the namespace from there.
func MaybeRunHolder() {
	v, ok := os.LookupEnv(holderEnv)
	if !ok {
		return
	}
	os.Unsetenv(holderEnv)
	status := os.NewFile(statusFD, "status")
	lifeline := os.NewFile(lifelineFD, "lifeline")
	if err := runHolder(v, status, lifeline); err != nil {
		fmt.Fprintf(status, "%s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
	os.Exit(0)
}

func runHolder(v string, status, lifeline *os.File) error {
	var cfg holderConfig
	if err := json.Unmarshal([]byte(v), &cfg); err != nil {
		return fmt.Errorf("holder config: %w", err)
	}
	if err := configureGuestSide(cfg.GuestVeth, 0); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables in the VM's namespace: %w", err)
	}
	rootlessNSTable(c, cfg.HostLoopback)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables in the VM's namespace: %w", err)
	}
	log := slog.New(slog.DiscardHandler)
	// Published ports: pasta or slirp4netns deliver port i to nsPort(cfg.Ports, i)
	// on the namespace's loopback (pasta's splice path) or its uplink
	// address; a proxy takes it on to the guest.
	for i, p := range cfg.Ports {
		ln, pc, err := listen(&Port{HostPort: nsPort(cfg.Ports, i), Proto: p.Proto})
		if err != nil {
			return fmt.Errorf("listen in the VM's namespace for %s: %w", p, err)
		}
		newProxy(ln, pc, net.JoinHostPort(GuestIP, strconv.Itoa(p.GuestPort)), log)
	}
	pc, err := listenDNS()
	if err != nil {
		return err
	}
	dns, err := pc.(*net.UDPConn).File()
	pc.Close()
	if err != nil {
		return fmt.Errorf("guest DNS socket: %w", err)
	}
	sc, err := net.FileConn(status)
	if err != nil {
		return fmt.Errorf("holder status socket: %w", err)
	}
	_, _, err = sc.(*net.UnixConn).WriteMsgUnix([]byte("ok\n"), unix.UnixRights(int(dns.Fd())), nil)
	sc.Close()
	dns.Close()
	if err != nil {
		return fmt.Errorf("pass the guest DNS socket: %w", err)
	}
	status.Close()
	io.Copy(io.Discard, lifeline)
	return nil
}

// readStatus reads the holder's one status line and, with "ok", the
// guest's DNS socket.
func readStatus(c *net.UnixConn) (net.PacketConn, error) {
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
	var line []byte
	var fds []int
	for !bytes.HasSuffix(line, []byte("\n")) {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, m := range msgs {
					if got, perr := unix.ParseUnixRights(&m); perr == nil {
						fds = append(fds, got...)
					}
				}
			}
		}
		line = append(line, buf[:n]...)
		if err != nil || n == 0 {
			for _, fd := range fds {
				unix.Close(fd)
			}
			if err == nil {
				err = io.EOF
			}
			return nil, fmt.Errorf("network namespace holder exited before it was ready (is MaybeRunHolder called first in main?): %w", err)
		}
	}
	if string(line) != "ok\n" || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		if string(line) == "ok\n" {
			return nil, errors.New("network namespace holder: no guest DNS socket with its status")
		}
		return nil, fmt.Errorf("network namespace holder: %s", bytes.TrimSuffix(line, []byte("\n")))
	}
	f := os.NewFile(uintptr(fds[0]), "guest-dns")
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("guest DNS socket from the holder: %w", err)
	}
	return pc, nil
}
