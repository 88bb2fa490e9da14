package network

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// lossyUpstream answers each query with "answer:" and the query, after
// dropping the first drop copies of each distinct query and sending a
// datagram with the wrong ID before the answer. It counts what it got.
func lossyUpstream(t *testing.T, drop int) (netip.AddrPort, func() int) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	seen := map[string]int{}
	total := 0
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := string(buf[:n])
			mu.Lock()
			seen[q]++
			total++
			k := seen[q]
			mu.Unlock()
			if k <= drop {
				continue
			}
			stray := append([]byte{q[0] ^ 0xff, q[1]}, "stray"...)
			pc.WriteTo(stray, from)
			pc.WriteTo(append([]byte(q[:2]), "answer:"+q...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), func() int { mu.Lock(); defer mu.Unlock(); return total }
}

func startForwarder(t *testing.T, ups ...netip.AddrPort) net.Addr {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := newDNSForwarder(pc, ups, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() { f.serve(); close(done) }()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr()
}

func ask(t *testing.T, fwd net.Addr, q []byte, within time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("udp4", fwd.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(within))
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no answer within %v: %v", within, err)
	}
	return buf[:n]
}

func TestDNSForwarderResendsLostQueries(t *testing.T) {
	up, count := lossyUpstream(t, 2)
	fwd := startForwarder(t, up)
	q := []byte("\x12\x34query-one")
	start := time.Now()
	got := ask(t, fwd, q, dnsTimeout)
	if want := append([]byte("\x12\x34"), "answer:"+string(q)...); !bytes.Equal(got, want) {
		t.Errorf("answer %q, want %q (the stray datagram with another ID must be skipped)", got, want)
	}
	if n := count(); n != 3 {
		t.Errorf("upstream got %d copies, want 3 (two lost, one answered)", n)
	}
	if el := time.Since(start); el < 2*dnsResend || el > 3*dnsResend+time.Second {
		t.Errorf("answered after %v; want about %v (two resends)", el, 2*dnsResend)
	}
}

// A silent first upstream costs its timeout, then the next one answers.
func TestDNSForwarderNextUpstream(t *testing.T) {
	silent, silentCount := lossyUpstream(t, 1000)
	up, _ := lossyUpstream(t, 0)
	fwd := startForwarder(t, silent, up)
	q := []byte("\xab\xcdquery-two")
	got := ask(t, fwd, q, dnsTimeout+3*time.Second)
	if !bytes.HasPrefix(got, []byte("\xab\xcdanswer:")) {
		t.Errorf("answer %q", got)
	}
	if n := silentCount(); n < int(dnsTimeout/dnsResend) {
		t.Errorf("silent upstream got %d copies in %v, want one every %v", n, dnsTimeout, dnsResend)
	}
}
