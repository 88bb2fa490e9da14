package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// hostState is what a network may leave on the host: fcvm namespaces,
// links and nftables tables, and processes this test process started.
type hostState struct {
	NetNS, Links, Tables, Children []string
}

func snapshot(t testing.TB) hostState {
	t.Helper()
	var s hostState
	ents, _ := os.ReadDir(netnsDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "fcvm-") {
			s.NetNS = append(s.NetNS, e.Name())
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "fcvm") {
			s.Links = append(s.Links, l.Attrs().Name)
		}
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "fcvm-") {
			s.Tables = append(s.Tables, tb.Name)
		}
	}
	s.Children = children(os.Getpid())
	return s
}

// children lists the live (non-zombie) child processes of pid as
// "PID comm".
func children(pid int) []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, d := range procs {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		end := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[end+1:])
		if len(f) < 2 || f[0] == "Z" || f[1] != strconv.Itoa(pid) {
			continue
		}
		out = append(out, d.Name()+" "+s[strings.IndexByte(s, '(')+1:end])
	}
	return out
}

func checkGone(t *testing.T, before hostState) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		after := snapshot(t)
		d := cmp.Diff(before, after)
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind (-before +after):\n%s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func udpEcho(t *testing.T, addr, msg string) string {
	t.Helper()
	c, err := net.Dial("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 100)
	for i := 0; i < 20; i++ {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no UDP echo from %s", addr)
	return ""
}

// serveGuest starts an HTTP server answering name on guest port 80 and a
// UDP echo on guest port 7.
func serveGuest(t *testing.T, g *guest, name string) {
	ln, _ := g.listen(t, "tcp4", ":80")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s", name, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, pc := g.listen(t, "udp4", ":7")
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
}

func TestModes(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			before := snapshot(t)
			t.Run("traffic", func(t *testing.T) { testTraffic(t, m) })
			checkGone(t, before)
		})
	}
}

func testTraffic(t *testing.T, m mode) {
	tcpPort, udpPort := freePort(t), freePort(t)
	ports, err := ParsePublish(fmt.Sprintf("127.0.0.1:%d:80", tcpPort))
	if err != nil {
		t.Fatal(err)
	}
	up, err := ParsePublish(fmt.Sprintf("127.0.0.1:%d:7/udp", udpPort))
	if err != nil {
		t.Fatal(err)
	}
	// The test's DNS server, on the host's loopback.
	dnsPC, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsServer(t, dnsPC, map[string]netip.Addr{"web.fcvm.test.": netip.MustParseAddr("192.0.2.80")})
	n, g := setupNet(t, m, Config{Ports: append(ports, up...), DNS: []string{dnsPC.LocalAddr().String()}})
	t.Logf("network: %s", mustJSON(n))
	serveGuest(t, g, "vm1")

	t.Run("http", func(t *testing.T) {
		got := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", tcpPort))
		if !strings.HasPrefix(got, "vm1 from ") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("udp", func(t *testing.T) {
		if got := udpEcho(t, fmt.Sprintf("127.0.0.1:%d", udpPort), "ping"); got != "vm1:ping" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("dns", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		addrs, err := g.resolver(n).LookupHost(ctx, "web.fcvm.test")
		if err != nil || !slices.Equal(addrs, []string{"192.0.2.80"}) {
			t.Fatalf("LookupHost = %v, %v", addrs, err)
		}
		_, err = g.resolver(n).LookupHost(ctx, "nothing.fcvm.test")
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Fatalf("LookupHost of a missing name = %v, want not found", err)
		}
	})
	t.Run("egress", func(t *testing.T) {
		// A server the guest reaches: rootless, on the host's loopback;
		// bridged, in a namespace the test makes behind the host.
		addr := egressServer(t, m)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := g.dial(ctx, "tcp4", addr)
		if err != nil {
			t.Fatalf("guest dial %s: %v", addr, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "hello guest" {
			t.Fatalf("read %q, %v", b, err)
		}
	})
	if m.mode == ModeBridged {
		t.Run("host-reaches-guest", func(t *testing.T) {
			got := httpGet(t, "http://"+n.HostIP+":80/")
			if !strings.HasPrefix(got, "vm1 from ") {
				t.Fatalf("got %q", got)
			}
		})
	}
}

// egressServer runs a TCP server that writes "hello guest" and returns
// the address the guest dials.
func egressServer(t *testing.T, m mode) string {
	serve := func(ln net.Listener) {
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("hello guest"))
				c.Close()
			}
		}()
	}
	if m.mode == ModeRootless {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serve(ln)
		return net.JoinHostPort(HostLoopbackIP, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	// A namespace behind the host, as a server on another machine would
	// be: 10.99.0.2, routed through the host.
	srv := attachServerNS(t)
	ln, _ := srv.listen(t, "tcp4", "10.99.0.2:8000")
	serve(ln)
	return "10.99.0.2:8000"
}
