package network

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lossyUpstream answers each query with "answer:" and the query's body
// (what follows its ID: the forwarder sends it under an ID of its own), after
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
			pc.WriteTo(append([]byte(q[:2]), "answer:"+q[2:]...), from)
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
	if want := append([]byte("\x12\x34"), "answer:"+string(q[2:])...); !bytes.Equal(got, want) {
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

// delayedUpstream answers each query with "answer:" and the query's body
// (after its ID) delay after it came, from two goroutines whatever the
// load. It counts what it got.
func delayedUpstream(t *testing.T, delay time.Duration) (netip.AddrPort, func() int) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type job struct {
		at   time.Time
		msg  []byte
		from net.Addr
	}
	jobs := make(chan job, 1<<16)
	var total atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		defer close(jobs)
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			total.Add(1)
			if n < 2 {
				continue
			}
			msg := append(append([]byte{buf[0], buf[1]}, "answer:"...), buf[2:n]...)
			jobs <- job{time.Now().Add(delay), msg, from}
		}
	}()
	go func() {
		defer wg.Done()
		for j := range jobs {
			time.Sleep(time.Until(j.at))
			pc.WriteTo(j.msg, j.from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), func() int { return int(total.Load()) }
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A guest flooding its forwarder (3000 queries as fast as it can send
// them, to an upstream that takes 200 ms to answer) costs the host a
// bounded number of goroutines, sockets and upstream datagrams; the
// queries the forwarder took are answered, and so is one after the flood.
func TestDNSForwarderFlood(t *testing.T) {
	const queries = 3000
	up, count := delayedUpstream(t, 200*time.Millisecond)
	fwd := startForwarder(t, up)
	c, err := net.Dial("udp4", fwd.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var answers atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			answers.Add(1)
		}
	}()
	var peakG, peakFD atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	go func() {
		defer close(sampled)
		for {
			if g := int64(runtime.NumGoroutine() - g0); g > peakG.Load() {
				peakG.Store(g)
			}
			if fd := int64(openFDs(t) - fd0); fd > peakFD.Load() {
				peakFD.Store(fd)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	q := make([]byte, 20)
	copy(q[2:], "flood-query-")
	for i := range queries {
		binary.BigEndian.PutUint16(q, uint16(i))
		binary.BigEndian.PutUint16(q[14:], uint16(i))
		c.Write(q)
	}
	sent := time.Since(start)
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	<-sampled
	elapsed := time.Since(start)
	t.Logf("sent %d queries in %v; in %v: %d answered, %d upstream datagrams, at most %d more goroutines and %d more fds",
		queries, sent, elapsed, answers.Load(), count(), peakG.Load(), peakFD.Load())
	if g := peakG.Load(); g > 8 {
		t.Errorf("the flood took %d more goroutines, want at most 8", g)
	}
	if fd := peakFD.Load(); fd > 4 {
		t.Errorf("the flood took %d more fds, want at most 4", fd)
	}
	if n, max := count(), dnsBurst+int(dnsRate*elapsed.Seconds())+1; n > max {
		t.Errorf("the flood made %d upstream datagrams in %v, want at most %d (burst %d, %v a second)", n, elapsed, max, dnsBurst, dnsRate)
	}
	if a := answers.Load(); a < dnsBurst {
		t.Errorf("%d answers to the flood, want at least the burst of %d", a, dnsBurst)
	}
	// Once the bucket has refilled, a query is answered as before.
	time.Sleep(time.Second)
	if got := ask(t, fwd, []byte("\x77\x88legit"), 2*time.Second); string(got) != "\x77\x88answer:legit" {
		t.Errorf("after the flood: answer %q", got)
	}
}

// A query no upstream answers is resent every resend, moved on after
// timeout, and dropped after the last upstream: nothing stays in flight.
func TestDNSForwarderGivesUp(t *testing.T) {
	silent, count := lossyUpstream(t, 1<<30)
	silent2, count2 := lossyUpstream(t, 1<<30)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := newDNSForwarder(pc, []netip.AddrPort{silent, silent2}, testLog(t))
	f.resend, f.timeout = 50*time.Millisecond, 200*time.Millisecond
	done := make(chan struct{})
	go func() { f.serve(); close(done) }()
	defer func() { pc.Close(); <-done }()
	c, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 10 {
		c.Write([]byte{0, byte(i), 'q'})
	}
	time.Sleep(600 * time.Millisecond)
	f.mu.Lock()
	pending := f.pending
	f.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d queries still in flight after both upstreams timed out", pending)
	}
	// Each upstream: the query and a resend every 50 ms within 200 ms.
	for i, n := range []int{count(), count2()} {
		if n < 10*3 || n > 10*5 {
			t.Errorf("upstream %d got %d datagrams for 10 queries, want 3 to 5 each", i, n)
		}
	}
}
