package network

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// dnsForwarder answers the guest's DNS queries on the gateway address by
// relaying each UDP query, unchanged, to the upstream resolvers in turn
// and the first answer back. It understands nothing of DNS beyond "one
// datagram in, one out" and the query ID, which is all a stub resolver
// needs. A datagram lost on the way (pasta's or the host's UDP path under
// load) is sent again after dnsResend, as a stub resolver would, so one
// loss costs the guest a second, not its whole lookup.
type dnsForwarder struct {
	pc        net.PacketConn
	upstreams []netip.AddrPort
	// dial makes the upstream socket; it decides which namespace the
	// query leaves from.
	dial func(ctx context.Context, to netip.AddrPort) (net.Conn, error)
	log  *slog.Logger
	wg   sync.WaitGroup
}

// dnsTimeout bounds one upstream; within it the query is resent every
// dnsResend until an answer comes.
const (
	dnsTimeout = 5 * time.Second
	dnsResend  = time.Second
)

func newDNSForwarder(pc net.PacketConn, upstreams []netip.AddrPort, log *slog.Logger) *dnsForwarder {
	f := &dnsForwarder{pc: pc, upstreams: upstreams, log: log}
	f.dial = func(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", to.String())
	}
	return f
}

// serve runs until pc is closed.
func (f *dnsForwarder) serve() {
	for {
		buf := make([]byte, 4096)
		n, from, err := f.pc.ReadFrom(buf)
		if err != nil {
			f.wg.Wait()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if ans := f.ask(buf[:n]); ans != nil {
				f.pc.WriteTo(ans, from)
			}
		}()
	}
}

func (f *dnsForwarder) ask(q []byte) []byte {
	for _, up := range f.upstreams {
		ctx, cancel := context.WithTimeout(context.Background(), dnsTimeout)
		c, err := f.dial(ctx, up)
		cancel()
		if err != nil {
			f.log.Debug("dns upstream", "server", up, "err", err)
			continue
		}
		ans, err := exchange(c, q, time.Now().Add(dnsTimeout))
		c.Close()
		if err == nil {
			return ans
		}
		f.log.Debug("dns upstream", "server", up, "err", err)
	}
	return nil
}

// exchange sends q on c until a reply with q's ID arrives or the deadline
// passes, resending every dnsResend.
func exchange(c net.Conn, q []byte, deadline time.Time) ([]byte, error) {
	if len(q) < 2 {
		return nil, errors.New("dns query too short")
	}
	buf := make([]byte, 65536)
	for {
		if _, err := c.Write(q); err != nil {
			return nil, err
		}
		next := time.Now().Add(dnsResend)
		if next.After(deadline) {
			next = deadline
		}
		c.SetReadDeadline(next)
		for {
			n, err := c.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(deadline) {
					break // resend
				}
				return nil, err
			}
			if n >= 2 && buf[0] == q[0] && buf[1] == q[1] {
				return buf[:n], nil
			}
			// a stray datagram (a late answer to nothing of ours): keep reading
		}
	}
}

// resolvConf lists the nameservers of a resolv.conf.
func resolvConf(b []byte) []string {
	var ns []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() {
				ns = append(ns, a.String())
			}
		}
	}
	return ns
}
