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

// natChains adds the nat chains a table needs; hooks it does not use are
// harmless (empty chains with policy accept).
type natChains struct {
	pre, out, post, fwd *nftables.Chain
}

func addChains(c *nftables.Conn, t *nftables.Table, forward bool) natChains {
	accept := nftables.ChainPolicyAccept
	mk := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	ch := natChains{
		pre:  mk("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
		out:  mk("output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
		post: mk("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
	}
	if forward {
		// Policy accept: this chain only ever adds accepts, it must
		// never be the one that drops the host's other forwarded traffic.
		ch.fwd = mk("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	}
	return ch
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

func masq() expr.Any   { return &expr.Masq{} }
func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

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

// hostTable writes a bridged VM's host table: published ports DNATed to
// the VM's namespace address, egress of the VM's /30 masqueraded, and its
// forwarded traffic accepted. Loopback publishing is left to the userspace
// proxy (see the package doc).
func hostTable(c *nftables.Conn, name, link string, vmNet netip.Prefix, nsAddr netip.Addr, ports []Port) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: name})
	ch := addChains(c, t, true)
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
	// ip saddr VMNET oifname != LINK masquerade
	rule(c, ch.post, addrMatch(false, expr.CmpOpEq, vmNet), ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpNeq, link), []expr.Any{masq()})
	// iifname LINK accept; oifname LINK accept
	rule(c, ch.fwd, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, link), []expr.Any{accept()})
	rule(c, ch.fwd, ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpEq, link), []expr.Any{accept()})
}

// nsTableName is the table inside a VM's namespace; the namespace is the
// VM's own, so one name serves every VM.
const nsTableName = "fcvm"

// bridgedNSTable writes the table in a bridged VM's namespace: whatever the
// host sends to the namespace's address goes to the guest (one to one, so
// the host reaches every guest port at Network.HostIP), and the guest's
// egress leaves masqueraded as that address.
func bridgedNSTable(c *nftables.Conn, veth string, nsAddr netip.Addr) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: nsTableName})
	ch := addChains(c, t, false)
	// iifname veth0 ip daddr NS dnat to GUEST
	rule(c, ch.pre, ifMatch(expr.MetaKeyIIFNAME, expr.CmpOpEq, veth),
		addrMatch(true, expr.CmpOpEq, netip.PrefixFrom(nsAddr, 32)), dnat(netip.MustParseAddr(GuestIP), 0))
	// ip saddr GUESTNET oifname != tap0 masquerade
	rule(c, ch.post, addrMatch(false, expr.CmpOpEq, guestNet), ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpNeq, TAPName), []expr.Any{masq()})
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
// egress is masqueraded out of the uplink. (Published ports need no rules:
// the holder proxies them, because pasta's splice path for UDP from the
// host's loopback does not carry DNATed replies back.)
func rootlessNSTable(c *nftables.Conn) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: nsTableName})
	ch := addChains(c, t, false)
	rule(c, ch.post, addrMatch(false, expr.CmpOpEq, guestNet), ifMatch(expr.MetaKeyOIFNAME, expr.CmpOpNeq, TAPName), []expr.Any{masq()})
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
