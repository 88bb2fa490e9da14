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
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fcvm/fcvm/internal/dnstest"
	"github.com/fcvm/fcvm/internal/nettest"
)

// hostState is what a network may leave on the host: fcvm namespaces,
// links and nftables tables, and processes this test process started.
type hostState struct {
	Net      nettest.Host
	Children []string
}

func snapshot(t testing.TB) hostState {
	t.Helper()
	h := nettest.HostState(t)
	h.Helpers = nil // this test's own helpers are its children
	return hostState{
		Net:      h.Filter(func(name string) bool { return strings.HasPrefix(name, "fcvm") }),
		Children: children(os.Getpid()),
	}
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
	tcpPort, udpPort := nettest.FreePort(t), nettest.FreePort(t)
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
	dnstest.Serve(t, dnsPC, map[string]netip.Addr{"web.fcvm.test.": netip.MustParseAddr("192.0.2.80")})
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
		// A server the guest reaches, in a namespace the test makes
		// behind the host (the host's loopback is not open to the guest:
		// TestHostLoopback).
		addr := egressServer(t)
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

// egressServer runs a TCP server that writes "hello guest" in a namespace
// behind the host, as a server on another machine would be: 10.99.0.2,
// routed through the host. It returns the address the guest dials.
func egressServer(t *testing.T) string {
	srv := attachServerNS(t)
	ln, _ := srv.listen(t, "tcp4", "10.99.0.2:8000")
	serveHello(t, ln)
	return "10.99.0.2:8000"
}

// serveHello answers each connection to ln with "hello guest".
func serveHello(t *testing.T, ln net.Listener) {
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

// readHello dials addr from the guest and reads what it says.
func readHello(g *guest, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := g.dial(ctx, "tcp4", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestHostLoopback: a rootless guest reaches a service on the host's
// loopback through the gateway only when its --network asks for it
// (podman's pasta:--map-gw, slirp4netns:allow_host_loopback=true);
// otherwise its connection is refused inside the VM's namespace.
func TestHostLoopback(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveHello(t, ln)
	addr := net.JoinHostPort(HostLoopbackIP, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	for _, tc := range []struct {
		network string
		open    bool
	}{
		{"rootless", false},
		{"pasta", false},
		{"pasta:--map-gw", true},
		{"slirp4netns", false},
		{"slirp4netns:allow_host_loopback=true", true},
		{"slirp4netns:allow_host_loopback=false", false},
	} {
		t.Run(tc.network, func(t *testing.T) {
			before := snapshot(t)
			t.Run("dial", func(t *testing.T) {
				n, g := setupNet(t, mode{tc.network, tc.network, ""}, Config{})
				if want := map[bool]string{true: HostLoopbackIP}[tc.open]; n.HostLoopbackIP != want {
					t.Errorf("Network.HostLoopbackIP = %q, want %q", n.HostLoopbackIP, want)
				}
				start := time.Now()
				got, err := readHello(g, addr)
				if tc.open && (err != nil || got != "hello guest") {
					t.Fatalf("guest dial %s with the host's loopback open: %q, %v", addr, got, err)
				}
				if !tc.open {
					if err == nil {
						t.Fatalf("guest reached the host's loopback at %s: read %q", addr, got)
					}
					// Refused, not timed out (a SYN may be resent once).
					if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 3*time.Second {
						t.Errorf("guest dial %s: %v after %v, want connection refused", addr, err, time.Since(start))
					}
				}
			})
			checkGone(t, before)
		})
	}
}
