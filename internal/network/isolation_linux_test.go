package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/nettest"
	"github.com/vishvananda/netlink"
)

// TestBridgedIsolation: a bridged guest reaches the outside world, its
// own published port and its DNS forwarder, and nothing else: not another
// VM (directly or through that VM's published port), not the host's own
// services, and nothing it sends with a source address other than its
// own gets out.
func TestBridgedIsolation(t *testing.T) {
	before := snapshot(t)
	t.Run("two-vms", func(t *testing.T) {
		data := t.TempDir()
		pubA, pubB := nettest.FreePort(t), nettest.FreePort(t)
		portsA, _ := ParsePublish(fmt.Sprintf("%d:80", pubA))
		portsB, _ := ParsePublish(fmt.Sprintf("%d:80", pubB))
		a, ga := setupNet(t, modes[0], Config{Ports: portsA, DataDir: data})
		b, gb := setupNet(t, modes[0], Config{Ports: portsB, DataDir: data})
		serveGuest(t, ga, "vmA")
		serveGuest(t, gb, "vmB")
		hostA := netip.MustParseAddr(a.HostIP).Prev() // the host's side of A's link
		hostB := netip.MustParseAddr(b.HostIP).Prev()

		// A service of the host's on its address on A's link (and so on
		// every address: the host's input is one).
		svc, err := net.Listen("tcp4", hostA.String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		serveHello(t, svc)
		svcPort := strconv.Itoa(svc.Addr().(*net.TCPAddr).Port)
		// The outside world, and a listener there that records every
		// datagram by what it says and where it came from. (The host
		// masquerades egress: what matters is what arrives at all.)
		srv := attachServerNS(t)
		egress, _ := srv.listen(t, "tcp4", "10.99.0.2:8000")
		serveHello(t, egress)
		_, rec := srv.listen(t, "udp4", "10.99.0.2:9000")
		var mu sync.Mutex
		got := map[string]int{} // "MESSAGE from IP"
		go func() {
			buf := make([]byte, 100)
			for {
				n, from, err := rec.ReadFrom(buf)
				if err != nil {
					return
				}
				mu.Lock()
				got[string(buf[:n])+" from "+from.(*net.UDPAddr).IP.String()]++
				mu.Unlock()
			}
		}()
		legit := func() bool {
			mu.Lock()
			defer mu.Unlock()
			for k := range got {
				if strings.HasPrefix(k, "legit ") {
					return true
				}
			}
			return false
		}

		t.Run("reaches", func(t *testing.T) {
			if got, err := readHello(ga, "10.99.0.2:8000"); err != nil || got != "hello guest" {
				t.Errorf("egress: %q, %v", got, err)
			}
			// Its own published port, through the host's address.
			if got := guestGet(t, ga, net.JoinHostPort(hostA.String(), strconv.Itoa(pubA))); !strings.HasPrefix(got, "vmA from ") {
				t.Errorf("own published port %d at %s: %q", pubA, hostA, got)
			}
			// The host still reaches both guests on any port.
			if got := httpGet(t, "http://"+b.HostIP+":80/"); !strings.HasPrefix(got, "vmB from ") {
				t.Errorf("host to B at %s: %q", b.HostIP, got)
			}
		})
		t.Run("does-not-reach", func(t *testing.T) {
			for what, addr := range map[string]string{
				"B at its address":               net.JoinHostPort(b.HostIP, "80"),
				"B through its published port":   net.JoinHostPort(hostA.String(), strconv.Itoa(pubB)),
				"the host's service on A's link": net.JoinHostPort(hostA.String(), svcPort),
				"the host's service on B's link": net.JoinHostPort(hostB.String(), svcPort),
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				c, err := ga.dial(ctx, "tcp4", addr)
				cancel()
				if err == nil {
					c.SetDeadline(time.Now().Add(2 * time.Second))
					buf := make([]byte, 100)
					n, _ := c.Read(buf)
					c.Close()
					t.Errorf("guest A reached %s (%s): read %q", what, addr, buf[:n])
				}
			}
		})
		t.Run("forged-source", func(t *testing.T) {
			// From the guest: a hostile kernel sets any address it likes.
			for _, src := range []string{"10.99.7.7", b.HostIP, GatewayIP} {
				if err := ga.sendFrom(src, "10.99.0.2:9000", "forged:"+src); err != nil {
					t.Fatalf("send from %s: %v", src, err)
				}
			}
			// From the VM's namespace itself, past its guard: the host's
			// guard and rp_filter hold.
			if err := inNetNS(a.NetNS, func() error { return sendFrom("lo", "10.99.8.8", "10.99.0.2:9000", "forged:10.99.8.8") }); err != nil {
				t.Fatalf("send from A's namespace: %v", err)
			}
			// A datagram from the guest's own address arrives (sent after
			// the forged ones, on the same path).
			deadline := time.Now().Add(5 * time.Second)
			for !legit() && time.Now().Before(deadline) {
				if err := ga.sendFrom(GuestIP, "10.99.0.2:9000", "legit"); err != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			arrived := legit()
			mu.Lock()
			defer mu.Unlock()
			if !arrived {
				t.Fatalf("no datagram from the guest's own address arrived (got %v)", got)
			}
			for k := range got {
				if strings.HasPrefix(k, "forged:") {
					t.Errorf("arrived: %s (a forged source got out)", k)
				}
			}
		})
	})
	checkGone(t, before)
}

// guestGet fetches http://addr/ from the guest.
func guestGet(t *testing.T, g *guest, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := g.dial(ctx, "tcp4", addr)
	if err != nil {
		t.Errorf("guest dial %s: %v", addr, err)
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	b := make([]byte, 4096)
	var all []byte
	for {
		n, err := c.Read(b)
		all = append(all, b[:n]...)
		if err != nil {
			break
		}
	}
	_, body, _ := strings.Cut(string(all), "\r\n\r\n")
	return body
}

// sendFrom sends one datagram from the guest with source address src.
func (g *guest) sendFrom(src, dst, msg string) error {
	return g.do(func() error { return sendFrom(guestPeer, src, dst, msg) })
}

// sendFrom sends one UDP datagram from src, in the calling thread's
// namespace, first adding src to the link dev if it is not there.
func sendFrom(dev, src, dst, msg string) error {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return err
	}
	a, _ := netlink.ParseAddr(src + "/32")
	if addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4); !hasAddr(addrs, src) {
		if err := netlink.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add %s to %s: %w", src, dev, err)
		}
	}
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}

func hasAddr(addrs []netlink.Addr, ip string) bool {
	for _, a := range addrs {
		if a.IP.String() == ip {
			return true
		}
	}
	return false
}
