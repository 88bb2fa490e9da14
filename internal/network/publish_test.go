package network

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePublish(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []Port
	}{
		{"8080:80", []Port{{HostPort: 8080, GuestPort: 80, Proto: "tcp"}}},
		{"127.0.0.1:8080:80", []Port{{HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80, Proto: "tcp"}}},
		{"0.0.0.0:53:53/udp", []Port{{HostPort: 53, GuestPort: 53, Proto: "udp"}}},
		{":8080:80/tcp", []Port{{HostPort: 8080, GuestPort: 80, Proto: "tcp"}}},
		{"8000-8001:9000-9001", []Port{{HostPort: 8000, GuestPort: 9000, Proto: "tcp"}, {HostPort: 8001, GuestPort: 9001, Proto: "tcp"}}},
		// No host port: Setup binds one the kernel picks.
		{"80", []Port{{GuestPort: 80, Proto: "tcp"}}},
		{"53/udp", []Port{{GuestPort: 53, Proto: "udp"}}},
		{"::80", []Port{{GuestPort: 80, Proto: "tcp"}}},
		{"127.0.0.1::80-81", []Port{{HostIP: "127.0.0.1", GuestPort: 80, Proto: "tcp"}, {HostIP: "127.0.0.1", GuestPort: 81, Proto: "tcp"}}},
	} {
		got, err := ParsePublish(tc.spec)
		if err != nil {
			t.Errorf("ParsePublish(%q): %v", tc.spec, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("ParsePublish(%q) (-want +got):\n%s", tc.spec, d)
		}
	}
}

func TestParsePublishErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"":                    "guest port",
		"127.0.0.1::0":        "between 1 and 65535",
		"8080:80/sctp":        `protocol "sctp"`,
		"a:8080:80":           "not an IPv4 address",
		"[::1]:8080:80":       "IPv6",
		"1.2.3.4:5:6:7":       "too many",
		"0:80":                "between 1 and 65535",
		"8080:65536":          "between 1 and 65535",
		"x:80":                "not a number",
		"8080:+80":            "not a number",
		"8001-8000:80-81":     "backwards",
		"8000-8002:80-81":     "differ in length",
		"8080:80/":            `protocol ""`,
		"300.1.1.1:8080:80":   "not an IPv4 address",
		"127.0.0.1:8080:80-x": "not a number",
	} {
		_, err := ParsePublish(spec)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "HOSTPORT:GUESTPORT") {
			t.Errorf("ParsePublish(%q) = %v, want an error with %q and the syntax", spec, err, want)
		}
	}
}

func TestCheckPorts(t *testing.T) {
	p := func(s string) []Port {
		ps, err := ParsePublish(s)
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	ok := append(append(p("127.0.0.1:80:80"), p("127.0.0.2:80:80")...), p("80:80/udp")...)
	if err := checkPorts(ok); err != nil {
		t.Errorf("checkPorts: %v", err)
	}
	bad := append(p("127.0.0.1:80:80"), p("80:81")...)
	if err := checkPorts(bad); err == nil || !strings.Contains(err.Error(), "published twice") {
		t.Errorf("checkPorts of a duplicate = %v", err)
	}
}

func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{"8080:80", "127.0.0.1:8080:80/udp", "1-2:3-4", "[::1]:1:2", "a:b:c:d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		ports, err := ParsePublish(spec)
		if err != nil {
			return
		}
		for _, p := range ports {
			if p.HostPort < 1 || p.HostPort > 65535 || p.GuestPort < 1 || p.GuestPort > 65535 || (p.Proto != "tcp" && p.Proto != "udp") {
				t.Fatalf("ParsePublish(%q) gave %+v", spec, p)
			}
			again, err := ParsePublish(p.String())
			if err != nil || len(again) != 1 || again[0] != p {
				t.Fatalf("%+v does not round-trip through %q: %v %v", p, p.String(), again, err)
			}
		}
	})
}

func TestResolvConf(t *testing.T) {
	got := resolvConf([]byte("# c\nnameserver 10.0.0.1\nnameserver fd00::1\nsearch x\nnameserver 127.0.0.53\n"))
	if d := cmp.Diff([]string{"10.0.0.1", "127.0.0.53"}, got); d != "" {
		t.Error(d)
	}
}

func TestPoolBlocks(t *testing.T) {
	b := blockAt(DefaultPool, 1)
	if b.net.String() != "10.66.0.4/30" || b.host.String() != "10.66.0.5" || b.ns.String() != "10.66.0.6" {
		t.Errorf("block 1 = %+v", b)
	}
	last := blockAt(DefaultPool, poolSize(DefaultPool)-1)
	if poolSize(DefaultPool) != 16384 || last.ns.String() != "10.66.255.254" {
		t.Errorf("last block %d = %+v", poolSize(DefaultPool), last)
	}
}
