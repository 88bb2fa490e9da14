package network

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Port is one published port: HostIP:HostPort on the host reaches
// GuestPort in the guest.
type Port struct {
	// HostIP is the host address to listen on; "" means every IPv4
	// address of the host, as podman's default.
	HostIP    string `json:"host_ip,omitempty"`
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
	// Proto is "tcp" or "udp".
	Proto string `json:"proto"`
}

func (p Port) String() string {
	if p.HostIP == "" {
		return fmt.Sprintf("%d:%d/%s", p.HostPort, p.GuestPort, p.Proto)
	}
	return fmt.Sprintf("%s:%d:%d/%s", p.HostIP, p.HostPort, p.GuestPort, p.Proto)
}

// loopback reports whether p listens on a loopback address only.
func (p Port) loopback() bool {
	a, err := netip.ParseAddr(p.HostIP)
	return err == nil && a.IsLoopback()
}

// ParsePublish parses one -p/--publish value in podman's syntax,
// [[IP:][HOSTPORT]:]GUESTPORT[/tcp|/udp], where either port may be a range
// (8080-8081:80-81) as long as both ranges have the same length. It returns
// one Port per port of the range. Without a host port (-p 80, -p
// 127.0.0.1::80) HostPort is 0: Setup binds a free one the kernel picks.
func ParsePublish(spec string) ([]Port, error) {
	bad := func(why string) error {
		return fmt.Errorf("-p %q: %s (want [IP:]HOSTPORT:GUESTPORT[/tcp|/udp], e.g. -p 127.0.0.1:8080:80, or [IP::]GUESTPORT for a free host port)", spec, why)
	}
	rest, proto, hasProto := strings.Cut(spec, "/")
	if !hasProto {
		proto = "tcp"
	}
	switch proto {
	case "tcp", "udp":
	default:
		return nil, bad(fmt.Sprintf("protocol %q is not tcp or udp", proto))
	}
	var hostIP, hostPorts, guestPorts string
	if strings.HasPrefix(rest, "[") {
		return nil, bad("IPv6 host addresses are not supported")
	}
	switch f := strings.Split(rest, ":"); len(f) {
	case 1:
		guestPorts = f[0]
	case 2:
		hostPorts, guestPorts = f[0], f[1]
	case 3:
		hostIP, hostPorts, guestPorts = f[0], f[1], f[2]
	default:
		return nil, bad("too many ':'")
	}
	if hostIP != "" {
		a, err := netip.ParseAddr(hostIP)
		if err != nil || !a.Is4() {
			return nil, bad(fmt.Sprintf("host address %q is not an IPv4 address", hostIP))
		}
		if a.IsUnspecified() {
			hostIP = "" // 0.0.0.0 is what "" means
		} else {
			hostIP = a.String()
		}
	}
	glo, ghi, err := parseRange(guestPorts)
	if err != nil {
		return nil, bad("guest port " + err.Error())
	}
	if hostPorts == "" {
		// Random host ports, one per guest port.
		ports := make([]Port, 0, ghi-glo+1)
		for g := glo; g <= ghi; g++ {
			ports = append(ports, Port{HostIP: hostIP, GuestPort: g, Proto: proto})
		}
		return ports, nil
	}
	hlo, hhi, err := parseRange(hostPorts)
	if err != nil {
		return nil, bad("host port " + err.Error())
	}
	if hhi-hlo != ghi-glo {
		return nil, bad("host and guest port ranges differ in length")
	}
	ports := make([]Port, 0, hhi-hlo+1)
	for i := 0; i <= hhi-hlo; i++ {
		ports = append(ports, Port{HostIP: hostIP, HostPort: hlo + i, GuestPort: glo + i, Proto: proto})
	}
	return ports, nil
}

// parseRange parses "N" or "N-M" with 1 <= N <= M <= 65535.
func parseRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = parsePort(a); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	if hi, err = parsePort(b); err != nil {
		return 0, 0, err
	}
	if hi < lo {
		return 0, 0, fmt.Errorf("range %q runs backwards", s)
	}
	return lo, hi, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("%d is not between 1 and 65535", n)
	}
	return n, nil
}

// checkPorts rejects a set of ports that would collide with itself: the
// same host port and protocol twice on overlapping addresses.
func checkPorts(ports []Port) error {
	type key struct {
		port  int
		proto string
	}
	seen := map[key]string{}
	for _, p := range ports {
		if p.HostPort == 0 {
			continue // the kernel picks a free one
		}
		k := key{p.HostPort, p.Proto}
		if ip, ok := seen[k]; ok && (ip == "" || p.HostIP == "" || ip == p.HostIP) {
			return fmt.Errorf("-p %s: host port %d/%s is published twice", p, p.HostPort, p.Proto)
		}
		seen[k] = p.HostIP
	}
	return nil
}
