package network

import "net/netip"

// block is one bridged VM's /30 of the pool: the host side of the veth has
// host, the namespace side ns.
type block struct {
	net      netip.Prefix
	host, ns netip.Addr
}

// poolSize is how many /30 blocks pool holds.
func poolSize(pool netip.Prefix) int { return 1 << (30 - pool.Bits()) }

// blockAt returns block i of pool.
func blockAt(pool netip.Prefix, i int) block {
	a := pool.Masked().Addr().As4()
	base := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	base += uint32(i) * 4
	addr := func(off uint32) netip.Addr {
		v := base + off
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return block{net: netip.PrefixFrom(addr(0), 30), host: addr(1), ns: addr(2)}
}
