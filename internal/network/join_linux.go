package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Mode ns: the VM joins a network namespace someone else made and owns
// (CNI's pod namespace, `ip netns add`). The namespace has one interface
// with the address the world routes to; the VM takes it over whole:
//
//   - a TAP is added beside the interface, and tc redirects every frame
//     arriving on either to the other's egress (an ingress qdisc with a
//     match-all u32 filter and a mirred action on each), so the
//     namespace's own stack sees none of them;
//   - the guest is given the interface's address, prefix, MAC and
//     default gateway, so that peers, ARP caches and CNI's bookkeeping
//     find the address where they left it.
//
// This is what kata-containers calls its tcfilter model. Nothing is
// NATed or proxied; the namespace keeps its address on the interface (the
// redirect runs before the stack would answer for it). Teardown removes
// the TAP and the ingress qdisc (with it the filter), which leaves the
// namespace as it was; the namespace itself is its owner's to remove.

// setupJoined makes a mode ns network into n; on error the caller tears n
// down, so what is made is recorded in n before the next step.
func setupJoined(cfg Config, n *Network, upstreams []netip.AddrPort) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: joining a network namespace needs root", ErrNeedRoot)
	}
	path := cfg.JoinNetNS
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("--network ns:%s: %w: give the path of a network namespace (ip netns add NAME makes /run/netns/NAME)", path, err)
	}
	defer ns.Close()
	if err := notOwnNetNS(ns, path); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("--network ns:%s: %w", path, err)
	}
	defer h.Close()
	up, err := uplinkOf(h, path)
	if err != nil {
		return err
	}
	addr, gw, err := addressOf(h, up, path)
	if err != nil {
		return err
	}
	n.NetNS, n.Link = path, up.Attrs().Name
	n.GuestIP, n.PrefixLen = addr.Addr().String(), addr.Bits()
	if gw.IsValid() {
		n.GatewayIP = gw.String()
	}
	n.GuestMAC = up.Attrs().HardwareAddr.String()
	if mtu := up.Attrs().MTU; mtu != 1500 {
		n.MTU = mtu
	}
	n.DNS = joinedDNS(upstreams, cfg.Log)

	err = inNetNS(path, func() error {
		var dev netlink.Link
		if cfg.guestVeth {
			dev = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: TAPName, MTU: up.Attrs().MTU}, PeerName: guestPeer}
		} else {
			dev = &netlink.Tuntap{
				LinkAttrs: netlink.LinkAttrs{Name: TAPName, MTU: up.Attrs().MTU},
				Mode:      netlink.TUNTAP_MODE_TAP,
				Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
			}
		}
		if err := netlink.LinkAdd(dev); err != nil {
			return fmt.Errorf("add %s in %s: %w", TAPName, path, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	n.TAP = TAPName
	tap, err := h.LinkByName(TAPName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", TAPName, path, err)
	}
	for _, l := range []netlink.Link{up, tap} {
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up in %s: %w", l.Attrs().Name, path, err)
		}
	}
	// The interface's ingress qdisc is recorded as ours only once added:
	// one that was there before is someone else's, never removed.
	if err := redirect(h, up, tap, &n.Ingress); err != nil {
		return fmt.Errorf("redirect %s to %s in %s: %w", n.Link, TAPName, path, err)
	}
	var tapIngress bool // goes with the TAP
	if err := redirect(h, tap, up, &tapIngress); err != nil {
		return fmt.Errorf("redirect %s to %s in %s: %w", TAPName, n.Link, path, err)
	}
	return nil
}

// notOwnNetNS refuses the namespace fcvm runs in: redirecting its
// interface into a VM would cut the host off its network.
func notOwnNetNS(ns netns.NsHandle, path string) error {
	self, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open own network namespace: %w", err)
	}
	defer self.Close()
	if ns.Equal(self) {
		return fmt.Errorf("--network ns:%s is fcvm's own network namespace: the VM would take its interface from the host; give a namespace of its own", path)
	}
	return nil
}

// uplinkOf finds the namespace's one interface besides loopback. A
// namespace with a TAP of ours already serves another VM.
func uplinkOf(h *netlink.Handle, path string) (netlink.Link, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", path, err)
	}
	var up netlink.Link
	var names []string
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 {
			continue
		}
		if a.Name == TAPName {
			return nil, fmt.Errorf("--network ns:%s: it has a link named %s already: another VM joined it (if that VM crashed, run fcvm gc)", path, TAPName)
		}
		names = append(names, a.Name)
		up = l
	}
	switch len(names) {
	case 1:
	case 0:
		return nil, fmt.Errorf("--network ns:%s: it has no interface besides lo: give it one with an address (CNI, or ip link)", path)
	default:
		return nil, fmt.Errorf("--network ns:%s: it has %d interfaces (%s): a VM takes over exactly one", path, len(names), strings.Join(names, ", "))
	}
	if len(up.Attrs().HardwareAddr) != 6 {
		return nil, fmt.Errorf("--network ns:%s: %s is not an Ethernet interface", path, up.Attrs().Name)
	}
	return up, nil
}

// addressOf reads the interface's IPv4 address and the default route's
// gateway, if there is one.
func addressOf(h *netlink.Handle, up netlink.Link, path string) (netip.Prefix, netip.Addr, error) {
	addrs, err := h.AddrList(up, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("addresses of %s in %s: %w", up.Attrs().Name, path, err)
	}
	var addr netip.Prefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		ones, _ := a.Mask.Size()
		addr = netip.PrefixFrom(ip.Unmap(), ones)
		break
	}
	if !addr.IsValid() {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("--network ns:%s: %s has no IPv4 address: the guest takes the interface's", path, up.Attrs().Name)
	}
	routes, err := h.RouteList(up, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("routes of %s in %s: %w", up.Attrs().Name, path, err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.Gw != nil {
			gw, ok := netip.AddrFromSlice(r.Gw)
			if ok {
				return addr, gw.Unmap(), nil
			}
		}
	}
	return addr, netip.Addr{}, nil
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// joinedDNS is what the guest's resolv.conf names: the upstreams
// themselves, since the namespace has no forwarder of fcvm's. A loopback
// resolver (systemd-resolved's 127.0.0.53, a test's) is the host's, not
// reachable from the namespace, and resolv.conf cannot name a port: those
// are left out.
func joinedDNS(upstreams []netip.AddrPort, log *slog.Logger) []string {
	var dns []string
	for _, u := range upstreams {
		if u.Addr().IsLoopback() || u.Port() != 53 {
			log.Info("guest resolver left out: not reachable from a joined namespace", "dns", u.String())
			continue
		}
		dns = append(dns, u.Addr().String())
	}
	return dns
}

// redirect sends every frame arriving on from out of to; added says when
// the ingress qdisc it put on from exists.
func redirect(h *netlink.Handle, from, to netlink.Link, added *bool) error {
	idx := from.Attrs().Index
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
	if err := h.QdiscAdd(q); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s has an ingress qdisc already: something else filters its traffic", from.Attrs().Name)
		}
		return fmt.Errorf("ingress qdisc: %w", err)
	}
	*added = true
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.MakeHandle(0xffff, 0), Priority: 1, Protocol: unix.ETH_P_ALL},
		Actions:     []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)},
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("redirect filter: %w", err)
	}
	return nil
}

// removeJoined undoes setupJoined in the namespace at path: the TAP goes
// (its qdisc with it) and, if ingress says it is ours, the interface's
// ingress qdisc (with its filter). A namespace or link already gone counts
// as removed.
func removeJoined(path, link, tap string, ingress bool) error {
	ns, err := netns.GetFromPath(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", path, err)
	}
	defer h.Close()
	var errs []error
	if tap != "" {
		if l, err := h.LinkByName(tap); err == nil {
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete %s in %s: %w", tap, path, err))
			}
		}
	}
	if link != "" && ingress {
		if l, err := h.LinkByName(link); err == nil {
			q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
			if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete ingress qdisc of %s in %s: %w", link, path, err))
			}
		}
	}
	return errors.Join(errs...)
}
