package nettest

import (
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
)

// TestServerNS: a listener made inside the namespace answers at the
// namespace's address from the host, and the link shows in the host's
// state until the test's cleanups run. (Other tests may change the host
// meanwhile, so only this test's link is looked for.)
func TestServerNS(t *testing.T) {
	t.Run("serve", func(t *testing.T) {
		ns, addr := ServerNS(t, "fcnettest0", netip.MustParsePrefix("10.97.0.1/30"))
		if addr != netip.MustParseAddr("10.97.0.2") {
			t.Fatalf("namespace address %s, want 10.97.0.2", addr)
		}
		var ln net.Listener
		if err := Do(ns, func() (err error) { ln, err = net.Listen("tcp4", ":7"); return err }); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("hello"))
				c.Close()
			}
		}()
		c, err := net.Dial("tcp4", "10.97.0.2:7")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "hello" {
			t.Fatalf("read %q from the namespace", b)
		}
		if !slices.Contains(HostState(t).Links, "fcnettest0") {
			t.Fatal("the link fcnettest0 is not in the host's state")
		}
	})
	if slices.Contains(HostState(t).Links, "fcnettest0") {
		t.Fatal("the link fcnettest0 is left behind")
	}
}

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("FreePort gave %d, not free for TCP: %v", p, err)
	}
	ln.Close()
	pc, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("FreePort gave %d, not free for UDP: %v", p, err)
	}
	pc.Close()
}
