package network

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/fcvm/fcvm/internal/nettest"
)

// nsPath names a namespace the test holds open, as ns:PATH takes it.
func nsPath(ns netns.NsHandle) string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns)) }

// joinNet sets up mode ns in the namespace at path, with a veth for the
// guest's TAP.
func joinNet(t *testing.T, path string, dns []string) (*Network, error) {
	t.Helper()
	return Setup(context.Background(), Config{
		Mode: "ns:" + path, ID: newID(t), DNS: dns, RuntimeDir: t.TempDir(),
		Log: testLog(t), guestVeth: true,
	})
}

// TestJoinNetNS: a VM joining a namespace made the way CNI makes a pod's
// (a veth to the host with an address and a default route) answers at
// that address, with that MAC, and reaches what the namespace reaches;
// teardown leaves the namespace as it found it.
func TestJoinNetNS(t *testing.T) {
	pod, podIP := nettest.ServerNS(t, "fcjoin0", netip.MustParsePrefix("10.97.4.1/30"))
	path := nsPath(pod)
	hp, err := netlink.NewHandleAt(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer hp.Close()
	eth, err := hp.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := hp.LinkSetMTU(eth, 1400); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t)

	n, err := joinNet(t, path, []string{"127.0.0.1:5353", "10.97.4.1"})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Logf("network: %s", mustJSON(n))
	want := [...]string{podIP.String(), "10.97.4.1", eth.Attrs().HardwareAddr.String(), path, "eth0", TAPName}
	if got := [...]string{n.GuestIP, n.GatewayIP, n.GuestMAC, n.NetNS, n.Link, n.TAP}; got != want || n.PrefixLen != 30 || n.MTU != 1400 {
		t.Fatalf("guest side %v /%d MTU %d, want %v /30 MTU 1400", got, n.PrefixLen, n.MTU, want)
	}
	if tap, err := hp.LinkByName(TAPName); err != nil || tap.Attrs().MTU != 1400 {
		t.Errorf("%s in the namespace: %v, want MTU 1400", TAPName, err)
	}
	// The host's loopback resolver is not the namespace's to reach.
	if !slices.Equal(n.DNS, []string{"10.97.4.1"}) {
		t.Errorf("DNS = %v, want [10.97.4.1]", n.DNS)
	}
	g := attachGuest(t, n)
	serveGuest(t, g, "vm1")

	t.Run("reached-at-the-namespace-address", func(t *testing.T) {
		got := httpGet(t, "http://"+podIP.String()+":80/")
		if !strings.HasPrefix(got, "vm1 from 10.97.4.1:") {
			t.Fatalf("got %q", got)
		}
		if got := udpEcho(t, podIP.String()+":7", "ping"); got != "vm1:ping" {
			t.Fatalf("udp: got %q", got)
		}
	})
	t.Run("egress", func(t *testing.T) {
		ln, err := net.Listen("tcp4", "10.97.4.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go serveHello(t, ln)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := g.dial(ctx, "tcp4", ln.Addr().String())
		if err != nil {
			t.Fatalf("guest dial %s: %v", ln.Addr(), err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "hello guest" {
			t.Fatalf("read %q, %v", b, err)
		}
	})
	t.Run("second-vm-refused", func(t *testing.T) {
		_, err := joinNet(t, path, nil)
		if err == nil || !strings.Contains(err.Error(), "another VM joined it") {
			t.Fatalf("second Setup: %v", err)
		}
		// Its undo must not have taken the first one's redirect.
		if got := httpGet(t, "http://"+podIP.String()+":80/"); !strings.HasPrefix(got, "vm1 from ") {
			t.Fatalf("first VM after the refused second: got %q", got)
		}
	})

	if err := n.Teardown(); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if _, err := hp.LinkByName(TAPName); err == nil {
		t.Errorf("%s left in the namespace", TAPName)
	}
	if qs, _ := hp.QdiscList(eth); slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Type() == "ingress" }) {
		t.Errorf("ingress qdisc left on eth0: %v", qs)
	}
	addrs, _ := hp.AddrList(eth, netlink.FAMILY_V4)
	if len(addrs) != 1 || !addrs[0].IP.Equal(podIP.AsSlice()) {
		t.Errorf("eth0's addresses after teardown: %v, want %s", addrs, podIP)
	}
	// Reclaim of what is already gone (fcvm gc after a clean exit).
	if err := Reclaim(n); err != nil {
		t.Errorf("Reclaim after Teardown: %v", err)
	}
	checkGone(t, before)
}

// TestJoinNetNSRefused: what mode ns cannot take over is refused with one
// line saying why, and nothing is made in the namespace.
func TestJoinNetNSRefused(t *testing.T) {
	bare := nettest.NewNS(t)
	// Holds the far ends of the veths below (this kernel has no dummy
	// links).
	far := nettest.NewNS(t)
	two, _ := nettest.ServerNS(t, "fcjoin1", netip.MustParsePrefix("10.97.5.1/30"))
	h2, err := netlink.NewHandleAt(two)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if err := h2.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "extra0"}, PeerName: "far0", PeerNamespace: netlink.NsFd(int(far))}); err != nil {
		t.Fatal(err)
	}
	noAddr := nettest.NewNS(t)
	ha, err := netlink.NewHandleAt(noAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "far1", PeerNamespace: netlink.NsFd(int(far))}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"own", "/proc/self/ns/net", "fcvm's own network namespace"},
		{"missing", "/run/netns/fcvm-test-no-such-ns", "give the path of a network namespace"},
		{"no-interface", nsPath(bare), "no interface besides lo"},
		{"two-interfaces", nsPath(two), "has 2 interfaces (eth0, extra0)"},
		{"no-address", nsPath(noAddr), "eth0 has no IPv4 address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := joinNet(t, tc.path, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Setup = %v, want one line saying %q", err, tc.want)
			}
		})
	}
	for _, ns := range []netns.NsHandle{bare, two, noAddr} {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.LinkByName(TAPName); err == nil {
			t.Errorf("%s left in %s", TAPName, nsPath(ns))
		}
		h.Close()
	}
	_, err = Setup(context.Background(), Config{Mode: "ns:" + nsPath(two), ID: newID(t), Ports: []Port{{HostPort: 8080, GuestPort: 80, Proto: "tcp"}}})
	if err == nil || !strings.Contains(err.Error(), "-p with --network ns:PATH") {
		t.Errorf("Setup with a published port = %v", err)
	}
}
