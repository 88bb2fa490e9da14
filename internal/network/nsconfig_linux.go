package network

import (
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
)

// configureGuestSide makes the guest-facing half of a VM's namespace, in
// the namespace of the calling thread: lo up, the TAP (or, for tests, a
// veth whose peer stands in for the guest) with the gateway address, and
// forwarding on. owner is the uid that may open the TAP.
func configureGuestSide(guestVeth bool, owner int) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	var dev netlink.Link
	if guestVeth {
		dev = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: TAPName}, PeerName: guestPeer}
	} else {
		dev = &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: TAPName},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
			Owner:     uint32(owner),
		}
	}
	if err := netlink.LinkAdd(dev); err != nil {
		return fmt.Errorf("add %s: %w", TAPName, err)
	}
	gw, _ := netlink.ParseAddr(fmt.Sprintf("%s/%d", GatewayIP, PrefixLen))
	if err := netlink.AddrAdd(dev, gw); err != nil {
		return fmt.Errorf("address %s: %w", TAPName, err)
	}
	if err := netlink.LinkSetUp(dev); err != nil {
		return fmt.Errorf("set %s up: %w", TAPName, err)
	}
	// The namespace's own sysctls: they change nothing on the host.
	// Strict reverse-path filtering on the TAP backs the guard chain of
	// guestFilter: only the guest's subnet may come from it.
	if err := writeSysctl("net/ipv4/conf/"+TAPName+"/rp_filter", "1"); err != nil {
		return err
	}
	return writeSysctl("net/ipv4/ip_forward", "1")
}

// writeSysctl writes a /proc/sys/net setting of the calling thread's
// network namespace (procfs resolves net/ by the opening thread).
func writeSysctl(name, v string) error {
	if err := os.WriteFile("/proc/sys/"+name, []byte(v), 0); err != nil {
		return fmt.Errorf("sysctl %s in the VM's namespace: %w", name, err)
	}
	return nil
}

// listenDNS opens the guest's DNS socket on the gateway address, in the
// namespace of the calling thread.
func listenDNS() (net.PacketConn, error) {
	pc, err := net.ListenPacket("udp4", GatewayIP+":53")
	if err != nil {
		return nil, fmt.Errorf("listen for guest DNS on %s:53: %w", GatewayIP, err)
	}
	return pc, nil
}
