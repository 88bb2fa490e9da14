package cli

import (
	"syscall"
	"testing"

	"github.com/fcvm/fcvm/internal/state"
)

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		"KILL": syscall.SIGKILL, "SIGTERM": syscall.SIGTERM, "term": syscall.SIGTERM,
		"sigusr1": syscall.SIGUSR1, "9": syscall.SIGKILL, "15": syscall.SIGTERM, "64": syscall.Signal(64),
	} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "FOO", "SIG", "0", "65", "-1", "SIGKILLX"} {
		if got, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) = %v, want an error", in, got)
		}
	}
}

func TestFormatPortList(t *testing.T) {
	ports := []state.Port{
		{HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"},
		{HostPort: 5353, GuestPort: 53, Proto: "udp"},
		{HostIP: "127.0.0.1", HostPort: 8443, GuestPort: 443},
	}
	for _, c := range []struct{ filter, want string }{
		{"", "80/tcp -> 127.0.0.1:8080\n53/udp -> 0.0.0.0:5353\n443/tcp -> 127.0.0.1:8443\n"},
		{"80", "127.0.0.1:8080\n"},
		{"80/tcp", "127.0.0.1:8080\n"},
		{"53/udp", "0.0.0.0:5353\n"},
		{"443", "127.0.0.1:8443\n"},
	} {
		if got, err := formatPortList(ports, c.filter); err != nil || got != c.want {
			t.Errorf("formatPortList(%q) = %q, %v; want %q", c.filter, got, err, c.want)
		}
	}
	for _, filter := range []string{"53", "80/udp", "81", "x", "80/sctp", "0", "70000"} {
		if got, err := formatPortList(ports, filter); err == nil {
			t.Errorf("formatPortList(%q) = %q, want an error", filter, got)
		}
	}
}
