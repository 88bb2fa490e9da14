package network

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Rules are built as expression lists, as nft(8) would compile them; the
// comment on each builder says what nft would print.

// natChains are the nat chains a table needs; hooks it does not use are
// harmless (empty chains with policy accept).
type natChains struct {
	pre, out, post *nftables.Chain
}

func addChains(c *nftables.Conn, t *nftables.Table) natChains {
	accept := nftables.ChainPolicyAccept
	mk := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	return natChains{
		pre:  mk("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
		out:  mk("output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
		post: mk("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
	}
}

// filterChain adds a filter chain with policy accept: fcvm's chains drop
// only what comes from or goes to a VM's own link, never the host's other
// traffic.
func filterChain(c *nftables.Conn, t *nftables.Table, name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: hook, Priority: prio, Policy: &accept})
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// ifMatch: iifname/oifname ==/!= name.
func ifMatch(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

// addrMatch: ip saddr/daddr ==/!= prefix.
func addrMatch(daddr bool, op expr.CmpOp, p netip.Prefix) []expr.Any {
	off := uint32(12)
	if daddr {
		off = 16
	}
	p = p.Masked()
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}}
	if p.Bits() < 32 {
		m := prefixMask(p.Bits())
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: []byte{0, 0, 0, 0}})
	}
	a := p.Addr().As4()
	return append(e, &expr.Cmp{Op: op, Register: 1, Data: a[:]})
}

func prefixMask(bits int) []byte {
	m := uint32(0xffffffff) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return binaryutil.BigEndian.PutUint32(m)
}

// localDest: fib daddr type local.
func localDest() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// portMatch: meta l4proto PROTO PROTO dport PORT.
func portMatch(proto string, port int) []expr.Any {
	p := byte(unix.IPPROTO_TCP)
	if proto == "udp" {
		p = unix.IPPROTO_UDP
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(port))},
	}
}

// dnat: dnat to ADDR[:PORT] (port 0: keep the port).
func dnat(to netip.Addr, port int) []expr.Any {
	a := to.As4()
	e := []expr.Any{&expr.Immediate{Register: 1, Data: a[:]}}
	nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1}
	if port > 0 {
		e = append(e, &expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(uint16(port))})
		nat.RegProtoMin, nat.Specified = 2, true
	}
	return append(e, nat)
}

// ifPrefix: iifname/oifname "PREFIX*" (nft compares only the prefix's
// bytes).
func ifPrefix(key expr.MetaKey, prefix string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)},
	}
}

// ctReplies: ct state established,related.
func ctReplies() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ctDNAT: ct status dnat (the connection's destination was translated:
// a published port).
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// Kernel constants x/sys/unix lacks: IPS_DST_NAT of
// linux/netfilter/nf_conntrack_common.h, ICMP_PORT_UNREACH of
// linux/icmp.h.
const (
	ipsDstNAT       = 1 << 5
	icmpPortUnreach = 3
)

func masq() expr.Any   { return &expr.Masq{} }
func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() expr.Any   { return &expr.Verdict{Kind: expr.VerdictDrop} }

// reject: reject (ICMP port unreachable: a TCP connect fails at once with
// ECONNREFUSED instead of timing out).
func reject() expr.Any {
	return &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpPortUnreach}
}

func rule(c *nftables.Conn, ch *nftables.Chain, parts ...[]expr.Any) {
	var e []expr.Any
	for _, p := range parts {
		e = append(e, p...)
	}
	c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: e})
}

var loopbackNet = netip.MustParsePrefix("127.0.0.0/8")

// guestNet is the guest's /30.
var guestNet = netip.MustParsePrefix(GatewayIP + "/30")

// hostTable writes a bridged VM's host table. NAT: published ports DNATed
// to the VM's namespace address, egress of the VM's /30 masqueraded, and
// the guest's own published ports reached from the guest (hairpin:
// masqueraded as the host side, or the namespace would drop a packet from
// its own address). Loopback publishing is left to the userspace proxy
// (see the package doc). Filter, every rule keyed on the VM's link: a
// packet from the link must carry the namespace's address; the host takes
// from the link only replies (its own services are not the guest's); what
// the host forwards to the link is a published port or a reply, and
// nothing is forwarded between two VM links (names "fcvm*"), whichever
// pool they are from.
func hostTable(c *nftables.Conn, name, link string, vmNet netip.Prefix, nsAddr netip.Addr, ports []Port) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	ch := addChains(c, t)
	for _, p := range ports {
		if p.loopback() {
			continue
		}
		var dst []expr.Any
		if p.HostIP == "" {
			dst = localDest()
		} else {
			dst = addrMatch(true, expr.CmpOpEq, netip.PrefixFrom(netip.MustParseAddr(p.HostIP), 32))
		}
		to := dnat(nsAddr, p.GuestPort)
		// From elsewhere: ... dport P dnat to NS:G.
		rule(c, ch.pre, dst, portMatch(p.Proto, p.HostPort), to)
		// From this host to one of its non-loopback addresses; loopback
		// destinations reach the proxy instead (DNAT of 127/8 would need
		// route_localnet).
		rule(c, ch.out, addrMatch(true, expr.CmpOpNeq, loopbackNet), dst, portMatch(p.Proto, p.HostPort), to)
	}
	ns := netip.PrefixFrom(nsAddr, 32)
	// ip saddr VMNET oifname != LINK masquerade
	rule(c, ch.post, addrMatch(false, expr.CmpOpEq, vmNet), ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpNeq, link), []expr.Any{masq()})
	// oifname LINK ip saddr NS ct status dnat masquerade
	rule(c, ch.post, ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpEq, link), addrMatch(false, expr.CmpOpEq, ns), ctDNAT(), []expr.Any{masq()})

	// Before conntrack and routing: iifname LINK ip saddr != NS drop
	guard := filterChain(c, t, "guard", nftables.ChainHookPrerouting, nftables.ChainPriorityRaw)
	rule(c, guard, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, link), addrMatch(false, expr.CmpOpNeq, ns), []expr.Any{drop()})

	// iifname LINK ct state established,related accept; iifname LINK drop
	in := filterChain(c, t, "input", nftables.ChainHookInput, nftables.ChainPriorityFilter)
	rule(c, in, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, link), ctReplies(), []expr.Any{accept()})
	rule(c, in, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, link), []expr.Any{drop()})

	fwd := filterChain(c, t, "forward", nftables.ChainHookForward, nftables.ChainPriorityFilter)
	// iifname LINK oifname "fcvm*" oifname != LINK drop, and the reverse
	rule(c, fwd, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, link), ifPrefix(expr.MetaKeyOIFNAME, linkPrefix),
		ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpNeq, link), []expr.Any{drop()})
	rule(c, fwd, ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpEq, link), ifPrefix(expr.MetaKeyIIFNAME, linkPrefix),
		ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpNeq, link), []expr.Any{drop()})
	// oifname LINK ct status dnat accept
	rule(c, fwd, ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpEq, link), ctDNAT(), []expr.Any{accept()})
	// oifname LINK ct state established,related accept; oifname LINK drop
	rule(c, fwd, ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpEq, link), ctReplies(), []expr.Any{accept()})
	rule(c, fwd, ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpEq, link), []expr.Any{drop()})
	// iifname LINK accept
	rule(c, fwd, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, link), []expr.Any{accept()})
}

// nsTableName is the table inside a VM's namespace; the namespace is the
// VM's own, so one name serves every VM.
const nsTableName = "fcvm"

// bridgedNSTable writes the table in a bridged VM's namespace: whatever
// the host side (hostAddr) sends to the namespace's address goes to the
// guest (one to one, so the host reaches every guest port at
// Network.HostIP), so do published ports from anywhere, the guest's egress
// leaves masqueraded as that address, and guestFilter holds the guest in.
func bridgedNSTable(c *nftables.Conn, veth string, nsAddr, hostAddr netip.Addr, ports []Port) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: nsTableName})
	ch := addChains(c, t)
	guest := dnat(netip.MustParseAddr(GuestIP), 0)
	ns := addrMatch(true, expr.CmpOpEq, netip.PrefixFrom(nsAddr, 32))
	// iifname veth0 ip saddr HOST ip daddr NS dnat to GUEST
	rule(c, ch.pre, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, veth),
		addrMatch(false, expr.CmpOpEq, netip.PrefixFrom(hostAddr, 32)), ns, guest)
	// iifname veth0 ip daddr NS PROTO dport G dnat to GUEST
	for _, p := range ports {
		rule(c, ch.pre, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, veth), ns, portMatch(p.Proto, p.GuestPort), guest)
	}
	// ip saddr GUESTNET oifname != tap0 masquerade
	rule(c, ch.post, addrMatch(false, expr.CmpOpEq, guestNet), ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpNeq, TAPName), []expr.Any{masq()})
	guestFilter(c, t)
}

// guestFilter adds to a VM namespace's table what holds the guest in, in
// both modes: a packet from the TAP must carry the guest's address (before
// conntrack, so nothing else sees it), and of the namespace itself the
// guest reaches only the DNS forwarder, and replies.
func guestFilter(c *nftables.Conn, t *nftables.Table) {
	tap := ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, TAPName)
	// iifname tap0 ip saddr != GUEST drop
	guard := filterChain(c, t, "guard", nftables.ChainHookPrerouting, nftables.ChainPriorityRaw)
	rule(c, guard, tap, addrMatch(false, expr.CmpOpNeq, netip.MustParsePrefix(GuestIP+"/32")), []expr.Any{drop()})
	in := filterChain(c, t, "input", nftables.ChainHookInput, nftables.ChainPriorityFilter)
	// iifname tap0 ct state established,related accept
	rule(c, in, tap, ctReplies(), []expr.Any{accept()})
	// iifname tap0 ip daddr GATEWAY udp dport 53 accept
	rule(c, in, tap, addrMatch(true, expr.CmpOpEq, netip.MustParsePrefix(GatewayIP+"/32")), portMatch("udp", 53), []expr.Any{accept()})
	// iifname tap0 drop
	rule(c, in, tap, []expr.Any{drop()})
}

// nsPort is the port in a rootless namespace that published port i
// arrives on from pasta or slirp4netns; the holder proxies it to the
// guest. UDP keeps the host port: pasta (2023-03) loses the replies of
// spliced UDP whose port it translates.
func nsPort(ports []Port, i int) int {
	if ports[i].Proto == "udp" {
		return ports[i].HostPort
	}
	return 20000 + i
}

// rootlessNSTable writes the table in a rootless VM's namespace: guest
// egress is masqueraded out of the uplink, guestFilter holds the guest in,
// and unless hostLoopback the guest's packets to HostLoopbackIP are
// refused here: pasta and slirp4netns are told not to map it to the host's
// loopback, and pasta would then send them on to whatever has that address
// outside. (Published ports need no rules: the holder proxies them,
// because pasta's splice path for UDP from the host's loopback does not
// carry DNATed replies back.)
func rootlessNSTable(c *nftables.Conn, hostLoopback bool) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: nsTableName})
	ch := addChains(c, t)
	rule(c, ch.post, addrMatch(false, expr.CmpOpEq, guestNet), ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpNeq, TAPName), []expr.Any{masq()})
	guestFilter(c, t)
	if !hostLoopback {
		// iifname tap0 ip daddr 10.0.2.2 reject
		fwd := filterChain(c, t, "forward", nftables.ChainHookForward, nftables.ChainPriorityFilter)
		rule(c, fwd, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, TAPName),
			addrMatch(true, expr.CmpOpEq, netip.MustParsePrefix(HostLoopbackIP+"/32")), []expr.Any{reject()})
	}
}

// deleteTable removes an ip table; a table that is not there is success.
func deleteTable(c *nftables.Conn, name string) error {
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	err := c.Flush()
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("delete nftables table ip %s: %w", name, err)
}
