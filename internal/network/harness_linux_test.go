package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/fcvm/fcvm/internal/nettest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestMain(m *testing.M) {
	MaybeRunHolder()
	if h := os.Getenv(testHelperEnv); h != "" {
		os.Exit(runTestHelper(h))
	}
	os.Exit(m.Run())
}

func newID(t testing.TB) string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// mode is one way of running the tests: a --network mode and, rootless,
// the helper.
type mode struct{ name, mode, userNet string }

var modes = []mode{
	{"bridged", ModeBridged, ""},
	{"rootless-pasta", ModeRootless, "pasta"},
	{"rootless-slirp4netns", ModeRootless, "slirp4netns"},
}

// setupNet makes a network whose guest side is a veth into a guest
// namespace the test controls.
func setupNet(t *testing.T, m mode, cfg Config) (*Network, *guest) {
	t.Helper()
	cfg.Mode, cfg.UserNet, cfg.guestVeth = m.mode, m.userNet, true
	if cfg.ID == "" {
		cfg.ID = newID(t)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if !cfg.Pool.IsValid() {
		cfg.Pool = testPool
	}
	cfg.RuntimeDir = t.TempDir()
	cfg.Log = testLog(t)
	n, err := Setup(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Teardown(); err != nil {
			t.Errorf("Teardown: %v", err)
		}
	})
	return n, attachGuest(t, n)
}

// guest is a network namespace standing in for the VM: it holds the far
// end of the guest veth, configured as the guest agent configures eth0.
type guest struct{ ns netns.NsHandle }

func attachGuest(t *testing.T, n *Network) *guest {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	host, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	g, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(host); err != nil {
		panic(err)
	}
	t.Cleanup(func() { g.Close() })
	vm, err := netns.GetFromPath(n.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	hv, err := netlink.NewHandleAt(vm)
	if err != nil {
		t.Fatal(err)
	}
	defer hv.Close()
	peer, err := hv.LinkByName(guestPeer)
	if err != nil {
		t.Fatalf("find guest veth: %v", err)
	}
	if err := hv.LinkSetNsFd(peer, int(g)); err != nil {
		t.Fatalf("move guest veth: %v", err)
	}
	hg, err := netlink.NewHandleAt(g)
	if err != nil {
		t.Fatal(err)
	}
	defer hg.Close()
	lo, _ := hg.LinkByName("lo")
	hg.LinkSetUp(lo)
	eth, err := hg.LinkByName(guestPeer)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(n.GuestMAC)
	addr, _ := netlink.ParseAddr(fmt.Sprintf("%s/%d", n.GuestIP, n.PrefixLen))
	for _, err := range []error{
		hg.LinkSetHardwareAddr(eth, mac),
		hg.AddrAdd(eth, addr),
		hg.LinkSetUp(eth),
		hg.RouteAdd(&netlink.Route{Gw: net.ParseIP(n.GatewayIP)}),
	} {
		if err != nil {
			t.Fatalf("configure guest: %v", err)
		}
	}
	return &guest{ns: g}
}

// do runs fn on a thread inside the guest: sockets made there stay there.
func (g *guest) do(fn func() error) error { return nettest.Do(g.ns, fn) }

func (g *guest) listen(t *testing.T, network, addr string) (ln net.Listener, pc net.PacketConn) {
	t.Helper()
	err := g.do(func() (err error) {
		if strings.HasPrefix(network, "udp") {
			pc, err = net.ListenPacket(network, addr)
			return err
		}
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("guest listen %s: %v", addr, err)
	}
	return ln, pc
}

func (g *guest) dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = g.do(func() error {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// resolver is the guest's stub resolver: the network's DNS server.
func (g *guest) resolver(n *Network) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return g.dial(ctx, "udp4", net.JoinHostPort(n.DNS[0], "53"))
	}}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// attachServerNS makes a namespace behind the host at 10.99.0.2 (the host
// side is 10.99.0.1 on the link fctest0), standing in for a machine the
// guest reaches through the host.
func attachServerNS(t *testing.T) *guest {
	t.Helper()
	ns, _ := nettest.ServerNS(t, "fctest0", netip.MustParsePrefix("10.99.0.1/30"))
	return &guest{ns: ns}
}

// testHelperEnv makes the test binary run runTestHelper instead of the
// tests (a helper process, as in os/exec's tests).
const testHelperEnv = "FCVM_NETWORK_TEST_HELPER"

// testPool keeps the tests' bridged addresses off DefaultPool, which a
// real fcvm on this host may be using from another data dir.
var testPool = netip.MustParsePrefix("10.67.0.0/16")
