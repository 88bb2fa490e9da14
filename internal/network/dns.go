package network

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// dnsForwarder answers the guest's DNS queries on the gateway address by
// relaying each UDP query to the upstream resolvers in turn and the first
// answer back. It understands nothing of DNS beyond "one datagram in, one
// out" and the query ID, which is all a stub resolver needs. A datagram
// lost on the way (pasta's or the host's UDP path under load) is sent
// again after dnsResend, as a stub resolver would, so one loss costs the
// guest a second, not its whole lookup.
//
// The guest is hostile, so what it may cost the host is fixed whatever it
// sends: goroutines (one reading the guest, one per upstream, one for the
// timers), sockets (one per upstream, made at start), queries in flight
// (dnsMaxPending, each holding only its own datagram of at most
// dnsMaxQuery bytes) and the rate of new queries (a token bucket of
// dnsBurst, refilled at dnsRate a second). What is over the limit is
// dropped, which a stub resolver treats as a lost datagram. Each query
// goes upstream under a random ID of the forwarder's, unique per upstream
// socket, and a reply is taken only from that socket (connected, so only
// from that upstream's address) with an ID in flight there; the guest gets
// it back with its own ID.
type dnsForwarder struct {
	pc        net.PacketConn
	upstreams []netip.AddrPort
	// dial makes an upstream socket; it decides which namespace the
	// queries leave from.
	dial func(ctx context.Context, to netip.AddrPort) (net.Conn, error)
	log  *slog.Logger
	// resend and timeout are dnsResend and dnsTimeout (tests shorten
	// them).
	resend, timeout time.Duration

	ups    []*dnsUpstream
	bucket tokenBucket
	wake   chan struct{} // a query was added: the timer goroutine looks again
	done   chan struct{} // closed when serve stops
	wg     sync.WaitGroup

	// mu guards the fields below and each upstream's inflight map.
	mu      sync.Mutex
	pending int // queries in flight, over all upstreams
}

// dnsUpstream is one upstream resolver and the socket every query to it
// goes out of.
type dnsUpstream struct {
	addr netip.AddrPort
	conn net.Conn // nil if it could not be made
	// inflight maps the IDs in flight on conn to their queries; guarded
	// by dnsForwarder.mu.
	inflight map[uint16]*dnsQuery
}

// dnsQuery is one guest query in flight.
type dnsQuery struct {
	from    net.Addr // the guest's address
	guestID uint16
	msg     []byte // the query, with the upstream ID in place of the guest's
	up      int    // index of the upstream it is at
	id      uint16 // its ID there
	resend  time.Time
	giveUp  time.Time // when to move on to the next upstream
}

const (
	// dnsTimeout bounds one upstream; within it the query is resent
	// every dnsResend until an answer comes.
	dnsTimeout = 5 * time.Second
	dnsResend  = time.Second
	// dnsMaxPending bounds the queries in flight per forwarder (per VM).
	dnsMaxPending = 256
	// dnsRate and dnsBurst bound new queries per forwarder: far above
	// what a resolving workload asks (answers are cached in the guest's
	// resolvers or not at all, and a lookup is one or two queries), far
	// below a flood.
	dnsRate  = 100.0
	dnsBurst = 100
	// dnsMaxQuery is the largest query taken (EDNS's common buffer size);
	// answers may be up to 64 KiB.
	dnsMaxQuery = 4096
)

func newDNSForwarder(pc net.PacketConn, upstreams []netip.AddrPort, log *slog.Logger) *dnsForwarder {
	f := &dnsForwarder{pc: pc, upstreams: upstreams, log: log, resend: dnsResend, timeout: dnsTimeout}
	f.dial = func(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", to.String())
	}
	return f
}

// serve runs until pc is closed, then closes the upstream sockets and
// returns once everything it started has stopped.
func (f *dnsForwarder) serve() {
	f.bucket = tokenBucket{rate: dnsRate, burst: dnsBurst, tokens: dnsBurst, last: time.Now()}
	f.wake = make(chan struct{}, 1)
	f.done = make(chan struct{})
	for _, a := range f.upstreams {
		u := &dnsUpstream{addr: a, inflight: map[uint16]*dnsQuery{}}
		ctx, cancel := context.WithTimeout(context.Background(), dnsTimeout)
		c, err := f.dial(ctx, a)
		cancel()
		if err != nil {
			f.log.Debug("dns upstream", "server", a, "err", err)
		} else {
			u.conn = c
			f.wg.Add(1)
			go f.readUpstream(u)
		}
		f.ups = append(f.ups, u)
	}
	f.wg.Add(1)
	go f.timers()

	buf := make([]byte, dnsMaxQuery+1)
	for {
		n, from, err := f.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				break
			}
			continue // e.g. a truncated datagram: not the socket's end
		}
		if n < 2 || n > dnsMaxQuery || !f.bucket.take(time.Now()) {
			continue
		}
		f.add(from, buf[:n])
	}
	close(f.done)
	for _, u := range f.ups {
		if u.conn != nil {
			u.conn.Close()
		}
	}
	f.wg.Wait()
}

// add puts a query in flight at the first upstream that has a socket.
func (f *dnsForwarder) add(from net.Addr, q []byte) {
	f.mu.Lock()
	if f.pending >= dnsMaxPending {
		f.mu.Unlock()
		return
	}
	dq := &dnsQuery{from: from, guestID: binary.BigEndian.Uint16(q), msg: append([]byte(nil), q...), up: -1}
	c, msg := f.moveLocked(dq, time.Now())
	f.mu.Unlock()
	if c != nil {
		c.Write(msg)
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// moveLocked takes dq to the next upstream that has a socket, under a
// fresh ID there, and returns what to send (nil if there is none left:
// the query is dropped).
func (f *dnsForwarder) moveLocked(dq *dnsQuery, now time.Time) (net.Conn, []byte) {
	if dq.up >= 0 {
		delete(f.ups[dq.up].inflight, dq.id)
		f.pending--
	}
	for dq.up++; dq.up < len(f.ups); dq.up++ {
		u := f.ups[dq.up]
		if u.conn == nil || len(u.inflight) >= 1<<16 {
			continue
		}
		for {
			dq.id = uint16(rand.N(1 << 16))
			if _, taken := u.inflight[dq.id]; !taken {
				break
			}
		}
		u.inflight[dq.id] = dq
		f.pending++
		binary.BigEndian.PutUint16(dq.msg, dq.id)
		dq.resend, dq.giveUp = now.Add(f.resend), now.Add(f.timeout)
		return u.conn, dq.msg
	}
	return nil, nil
}

// readUpstream takes u's replies back to the guests that asked.
func (f *dnsForwarder) readUpstream(u *dnsUpstream) {
	defer f.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := u.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ECONNREFUSED from an ICMP error: the query will be
			// resent or move on; the socket is still good.
			f.log.Debug("dns upstream", "server", u.addr, "err", err)
			continue
		}
		if n < 2 {
			continue
		}
		id := binary.BigEndian.Uint16(buf)
		f.mu.Lock()
		dq, ok := u.inflight[id]
		if ok {
			delete(u.inflight, id)
			f.pending--
		}
		f.mu.Unlock()
		if !ok {
			continue // a late answer to a query already answered or given up
		}
		binary.BigEndian.PutUint16(buf, dq.guestID)
		f.pc.WriteTo(buf[:n], dq.from)
	}
}

// timers resends queries not answered within resend and moves those not
// answered within timeout on to the next upstream. It sleeps while
// nothing is in flight.
func (f *dnsForwarder) timers() {
	defer f.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	type send struct {
		c   net.Conn
		msg []byte
	}
	var sends []send
	for {
		select {
		case <-f.done:
			t.Stop()
			return
		case <-f.wake:
		case <-t.C:
		}
		now := time.Now()
		var next time.Time
		sends = sends[:0]
		f.mu.Lock()
		for _, u := range f.ups {
			for _, dq := range u.inflight {
				switch {
				case !now.Before(dq.giveUp):
					if c, msg := f.moveLocked(dq, now); c != nil {
						sends = append(sends, send{c, append([]byte(nil), msg...)})
					} else {
						continue
					}
				case !now.Before(dq.resend):
					dq.resend = now.Add(f.resend)
					sends = append(sends, send{u.conn, append([]byte(nil), dq.msg...)})
				}
				// Deleting and adding entries of the map being ranged
				// over is allowed; a query moved to a later upstream may
				// be seen again there, with deadlines now in the future.
				d := dq.resend
				if dq.giveUp.Before(d) {
					d = dq.giveUp
				}
				if next.IsZero() || d.Before(next) {
					next = d
				}
			}
		}
		f.mu.Unlock()
		for _, s := range sends {
			s.c.Write(s.msg)
		}
		if !next.IsZero() {
			t.Reset(time.Until(next))
		}
	}
}

// tokenBucket admits at most burst events at once and rate a second on
// average. Only serve's goroutine uses it.
type tokenBucket struct {
	rate   float64 // tokens a second
	burst  float64
	tokens float64
	last   time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
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
