package network

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/google/nftables"
)

// holderEnv carries a rootless holder's configuration (JSON) to the
// re-executed binary.
const holderEnv = "FCVM_NETNS_HOLDER"

// holderArg0 is how a holder shows in ps.
const holderArg0 = "fcvm-netns-holder"

type holderConfig struct {
	Ports     []Port           `json:"ports"`
	DNS       []netip.AddrPort `json:"dns"`
	GuestVeth bool             `json:"guest_veth,omitempty"`
}

// The holder's inherited descriptors: it reports "ok" or the error on
// statusFD, and exits when lifelineFD reaches EOF (the process that
// started it closed its end, or died).
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
		fmt.Fprintf(status, "%v\n", err)
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
	rootlessNSTable(c)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables in the VM's namespace: %w", err)
	}
	log := slog.New(slog.DiscardHandler)
	// Published ports: pasta or slirp4netns deliver port i to nsPort(cfg.Ports, i)
	// on the namespace's loopback (pasta's splice path) or its uplink
	// address; a proxy takes it on to the guest.
	for i, p := range cfg.Ports {
		ln, pc, err := listen(Port{HostPort: nsPort(cfg.Ports, i), Proto: p.Proto})
		if err != nil {
			return fmt.Errorf("listen in the VM's namespace for %s: %w", p, err)
		}
		newProxy(ln, pc, net.JoinHostPort(GuestIP, strconv.Itoa(p.GuestPort)), log)
	}
	pc, err := listenDNS()
	if err != nil {
		return err
	}
	fwd := newDNSForwarder(pc, cfg.DNS, log)
	go fwd.serve()
	if _, err := status.WriteString("ok\n"); err != nil {
		return err
	}
	status.Close()
	io.Copy(io.Discard, lifeline)
	return nil
}

// readStatus reads the holder's one status line.
func readStatus(r io.Reader) error {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		return fmt.Errorf("network namespace holder exited before it was ready (is MaybeRunHolder called first in main?): %w", err)
	}
	if line != "ok\n" {
		return fmt.Errorf("network namespace holder: %s", line[:len(line)-1])
	}
	return nil
}
