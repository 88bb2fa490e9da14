package agent

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/fcvm/fcvm/internal/channel"
)

func setupLoopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	return netlink.LinkSetUp(lo)
}

// announce makes the network notice a restored guest. Placeholder for the
// gratuitous ARP of the networking work: bringing the link down and up
// makes the kernel send one.
func announce(log *slog.Logger, n *channel.NetPlan) {
	links, err := netlink.LinkList()
	if err != nil {
		return
	}
	for _, l := range links {
		if l.Attrs().HardwareAddr.String() == n.MAC {
			netlink.LinkSetDown(l)
			if err := netlink.LinkSetUp(l); err != nil {
				log.Warn("re-announce network", "err", err)
			}
		}
	}
}

// setupNetwork configures the guest's one interface statically from the
// plan (no DHCP wait), its default route and its resolver. The container
// shares this network (as podman's --network host).
func (a *Agent) setupNetwork(n *channel.NetPlan) error {
	if n == nil {
		return nil
	}
	mac, err := net.ParseMAC(n.MAC)
	if err != nil {
		return fmt.Errorf("network plan: MAC %q: %w", n.MAC, err)
	}
	var link netlink.Link
	deadline := time.Now().Add(10 * time.Second)
	for link == nil {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == mac.String() {
				link = l
			}
		}
		if link == nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("no network interface with MAC %s", n.MAC)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	addr, err := netlink.ParseAddr(n.Address)
	if err != nil {
		return fmt.Errorf("network plan: address %q: %w", n.Address, err)
	}
	if n.MTU != 0 {
		if n.MTU < 576 || n.MTU > 65535 {
			return fmt.Errorf("network plan: MTU %d out of range", n.MTU)
		}
		if err := netlink.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", n.MTU, err)
		}
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("set address %s: %w", n.Address, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", link.Attrs().Name, err)
	}
	// A joined namespace (--network ns:) may have no default route: then
	// neither has the guest.
	if n.Gateway != "" {
		gw := net.ParseIP(n.Gateway)
		if gw == nil {
			return fmt.Errorf("network plan: gateway %q", n.Gateway)
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	var rc strings.Builder
	for _, d := range n.DNS {
		fmt.Fprintf(&rc, "nameserver %s\n", d)
	}
	if err := os.WriteFile("/etc/resolv.conf", []byte(rc.String()), 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	hostname, _ := os.Hostname()
	hosts := fmt.Sprintf("127.0.0.1 localhost\n::1 localhost\n%s %s\n", addr.IP, hostname)
	if err := os.WriteFile("/etc/hosts", []byte(hosts), 0o644); err != nil {
		return fmt.Errorf("write hosts: %w", err)
	}
	return nil
}
