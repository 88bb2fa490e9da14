// Package nettest is what network tests share: a namespace standing in for
// a machine behind the host (so no test packet leaves the machine), a way
// to run code inside a namespace, free loopback ports, and a listing of
// what networking leaves on the host, so a test can say nothing was left
// behind.
package nettest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// FreePort is a port free on 127.0.0.1 for both TCP and UDP.
func FreePort(t testing.TB) int {
	t.Helper()
	for {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if pc, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			pc.Close()
			return p
		}
	}
}

// Do runs fn on a thread inside ns: sockets made there stay there.
func Do(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	host, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer host.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(host); err != nil {
		panic(err) // this thread is in the wrong namespace: do not let it run anything else
	}
	runtime.UnlockOSThread()
	return ferr
}

// NewNS makes an unnamed network namespace that lives until the test ends.
func NewNS(t testing.TB) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	host, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer host.Close()
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	if err := netns.Set(host); err != nil {
		panic(err) // this thread is in the wrong namespace: do not let it run anything else
	}
	runtime.UnlockOSThread()
	t.Cleanup(func() { ns.Close() })
	return ns
}

// ServerNS makes a namespace behind the host: a veth link named link on
// the host with hostAddr, its peer eth0 in the namespace with the next
// address of the same prefix and a default route through the host, and
// loopback up. It returns the namespace and its address.
func ServerNS(t testing.TB, link string, hostAddr netip.Prefix) (netns.NsHandle, netip.Addr) {
	t.Helper()
	ns := NewNS(t)
	nsAddr := hostAddr.Addr().Next()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: link}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add %s: %v", link, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(link); err == nil {
			netlink.LinkDel(l)
		}
	})
	a, _ := netlink.ParseAddr(hostAddr.String())
	if err := netlink.AddrAdd(veth, a); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}
	hs, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	eth, err := hs.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	lo, err := hs.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := netlink.ParseAddr(netip.PrefixFrom(nsAddr, hostAddr.Bits()).String())
	for _, err := range []error{hs.AddrAdd(eth, b), hs.LinkSetUp(eth), hs.LinkSetUp(lo), hs.RouteAdd(&netlink.Route{Gw: hostAddr.Addr().AsSlice()})} {
		if err != nil {
			t.Fatalf("configure the server namespace: %v", err)
		}
	}
	return ns, nsAddr
}

// Host is what networking leaves on the host: named network namespaces
// (/run/netns), links, nftables tables (every family) and the network
// helper processes (pasta, passt, slirp4netns, fcvm's namespace holders)
// as "PID ARGS".
type Host struct {
	NetNS, Links, Tables, Helpers []string
}

// HostState lists what is on the host now.
func HostState(t testing.TB) Host {
	t.Helper()
	var h Host
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			h.NetNS = append(h.NetNS, e.Name())
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	for _, l := range links {
		h.Links = append(h.Links, l.Attrs().Name)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatalf("nftables: %v", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatalf("list nftables tables: %v", err)
	}
	for _, tb := range tables {
		h.Tables = append(h.Tables, tb.Name)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		base := filepath.Base(args[0])
		if strings.HasPrefix(base, "pasta") || strings.HasPrefix(base, "passt") || base == "slirp4netns" || base == "fcvm-netns-holder" {
			h.Helpers = append(h.Helpers, e.Name()+" "+strings.Join(args, " "))
		}
	}
	return h
}

// Minus is what h has that o does not.
func (h Host) Minus(o Host) Host {
	d := func(a, b []string) []string {
		var out []string
		for _, x := range a {
			if !slices.Contains(b, x) {
				out = append(out, x)
			}
		}
		return out
	}
	return Host{d(h.NetNS, o.NetNS), d(h.Links, o.Links), d(h.Tables, o.Tables), d(h.Helpers, o.Helpers)}
}

// Filter keeps the entries for which keep is true.
func (h Host) Filter(keep func(string) bool) Host {
	f := func(a []string) []string {
		var out []string
		for _, x := range a {
			if keep(x) {
				out = append(out, x)
			}
		}
		return out
	}
	return Host{f(h.NetNS), f(h.Links), f(h.Tables), f(h.Helpers)}
}

// Empty reports whether h lists nothing.
func (h Host) Empty() bool {
	return len(h.NetNS)+len(h.Links)+len(h.Tables)+len(h.Helpers) == 0
}

func (h Host) String() string {
	return fmt.Sprintf("netns %v; links %v; nftables %v; helpers %v", h.NetNS, h.Links, h.Tables, h.Helpers)
}
