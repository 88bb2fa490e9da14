package network

import (
	"strings"
	"testing"
)

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Spec
	}{
		{"rootless", Spec{Mode: ModeRootless}},
		{"bridged", Spec{Mode: ModeBridged}},
		{"none", Spec{Mode: ModeNone}},
		{"pasta", Spec{Mode: ModeRootless, UserNet: "pasta"}},
		{"pasta:--map-gw", Spec{Mode: ModeRootless, UserNet: "pasta", HostLoopback: true}},
		{"pasta:--map-gw,--no-map-gw", Spec{Mode: ModeRootless, UserNet: "pasta"}},
		{"slirp4netns", Spec{Mode: ModeRootless, UserNet: "slirp4netns"}},
		{"slirp4netns:allow_host_loopback=true", Spec{Mode: ModeRootless, UserNet: "slirp4netns", HostLoopback: true}},
		{"slirp4netns:allow_host_loopback=false", Spec{Mode: ModeRootless, UserNet: "slirp4netns"}},
		{"ns:/run/netns/pod1", Spec{Mode: ModeNS, NetNS: "/run/netns/pod1"}},
		{"ns:/proc/123/ns/net", Spec{Mode: ModeNS, NetNS: "/proc/123/ns/net"}},
	} {
		got, err := ParseMode(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseMode(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "must be rootless, bridged, none or ns:PATH"},
		{"host", "must be rootless, bridged, none or ns:PATH"},
		{"bridged:--map-gw", "takes no options"},
		{"rootless:x", "takes no options"},
		{"pasta:-T,80", `unknown pasta option "-T"`},
		{"pasta:allow_host_loopback=true", "unknown pasta option"},
		{"slirp4netns:--map-gw", `unknown slirp4netns option "--map-gw"`},
		{"slirp4netns:allow_host_loopback=yes", "unknown slirp4netns option"},
		{"slirp4netns:", "unknown slirp4netns option"},
		{"ns", "ns takes the absolute, clean path"},
		{"ns:", "ns takes the absolute, clean path"},
		{"ns:run/netns/x", "ns takes the absolute, clean path"},
		{"ns:/run/netns/../x", "ns takes the absolute, clean path"},
	} {
		_, err := ParseMode(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--network") || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseMode(%q) = %v, want one line naming --network and saying %q", tc.in, err, tc.want)
		}
	}
}
