package dnstest

import (
	"context"
	"net"
	"net/netip"
	"testing"
)

func TestServe(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, pc, map[string]netip.Addr{"web.fcvm.test.": netip.MustParseAddr("192.0.2.80")})
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp4", pc.LocalAddr().String())
	}}
	addrs, err := r.LookupNetIP(context.Background(), "ip4", "WEB.fcvm.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.80") {
		t.Errorf("lookup = %v, %v", addrs, err)
	}
	if _, err := r.LookupNetIP(context.Background(), "ip4", "other.fcvm.test"); err == nil {
		t.Error("an unknown name resolved")
	} else if de, ok := err.(*net.DNSError); !ok || !de.IsNotFound {
		t.Errorf("unknown name: %v, want not found", err)
	}
}
