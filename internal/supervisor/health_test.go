package supervisor

import (
	"strings"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/health"
	"github.com/fcvm/fcvm/internal/state"
)

func TestGuestAddr(t *testing.T) {
	bridged := state.Network{Mode: "bridged", HostIP: "10.66.0.2"}
	rootless := state.Network{Mode: "rootless", Ports: []state.Port{
		{HostIP: "127.0.0.1", HostPort: 18080, GuestPort: 80, Proto: "tcp"},
		{HostPort: 18443, GuestPort: 443, Proto: "tcp"},
		{HostIP: "127.0.0.1", HostPort: 5353, GuestPort: 53, Proto: "udp"},
	}}
	for _, tc := range []struct {
		n         state.Network
		port      int
		want, err string
	}{
		{n: bridged, port: 8080, want: "10.66.0.2:8080"},
		{n: rootless, port: 80, want: "127.0.0.1:18080"},
		{n: rootless, port: 443, want: "127.0.0.1:18443"},
		{n: rootless, port: 53, err: "container port 53 is not published"},
		{n: rootless, port: 8080, err: "add -p HOSTPORT:8080, or use --network bridged"},
	} {
		got, err := guestAddr(tc.n, tc.port, "http://guest/")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s port %d: %q, %v; want error %q", tc.n.Mode, tc.port, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s port %d: %q, %v; want %q", tc.n.Mode, tc.port, got, err, tc.want)
		}
	}
}

func TestHealthOptionsValidate(t *testing.T) {
	cfg := health.Config{Interval: time.Second, Timeout: time.Second, Retries: 3}
	for _, tc := range []struct {
		h    HealthOptions
		mode string
		err  string
	}{
		{h: HealthOptions{}, mode: "none"},
		{h: HealthOptions{URL: "http://guest/", Config: cfg}, mode: "bridged"},
		{h: HealthOptions{URL: "http://127.0.0.1:8080/", Config: cfg}, mode: "none"},
		{h: HealthOptions{Cmd: "true", Config: cfg}, mode: "none"},
		{h: HealthOptions{URL: "http://guest/", Config: cfg}, mode: "none", err: "--network none"},
		{h: HealthOptions{URL: "http://guest/", Cmd: "true", Config: cfg}, mode: "rootless", err: "not both"},
		{h: HealthOptions{Cmd: "true"}, mode: "rootless", err: "--health-interval"},
		{h: HealthOptions{Cmd: `["CMD"]`, Config: cfg}, mode: "rootless", err: "no command"},
	} {
		err := tc.h.validate(tc.mode)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%+v in %s: %v, want error %q", tc.h, tc.mode, err, tc.err)
		}
	}
}
