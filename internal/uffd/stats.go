package uffd

import (
	"fmt"
	"io"
	"math/bits"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// ClientStats is what the server knows about one client.
type ClientStats struct {
	ID      uint64    // server-assigned, in order of connection
	PID     int       // the client's process, from SO_PEERCRED
	Started time.Time // when the handshake was accepted
	Regions int
	// Faults counts page faults served; ZeroFaults those served as zeros
	// because the range had been removed (balloon, MADV_DONTNEED).
	Faults     uint64
	ZeroFaults uint64
	// Bytes counts bytes copied into the client, prefetched ones included.
	Bytes uint64
	// Prefetched counts pages copied ahead of any fault from a recorded
	// working set.
	Prefetched uint64
	// P50 and P99 are the fault service time: from reading the fault off
	// the userfaultfd to the copy that wakes the faulting thread returning.
	// They are histogram buckets, accurate to about 6%.
	P50, P99 time.Duration
}

// latencyHist is a log-linear histogram of nanoseconds: values below 16
// get a bucket each, above that eight buckets per power of two. One
// goroutine records, any may read, so the buckets are atomics.
type latencyHist struct {
	buckets [16 + 60*8]atomic.Uint64
}

func histBucket(ns uint64) int {
	if ns < 16 {
		return int(ns)
	}
	e := bits.Len64(ns) - 1 // ≥ 4
	sub := (ns >> (e - 3)) & 7
	return 16 + (e-4)*8 + int(sub)
}

// histValue is the midpoint of bucket i.
func histValue(i int) uint64 {
	if i < 16 {
		return uint64(i)
	}
	e := (i-16)/8 + 4
	sub := uint64((i - 16) % 8)
	lo := (8 + sub) << (e - 3)
	return lo + (uint64(1)<<(e-3))/2
}

func (h *latencyHist) record(d time.Duration) {
	ns := uint64(max(d, 0))
	i := min(histBucket(ns), len(h.buckets)-1)
	h.buckets[i].Add(1)
}

// quantiles returns the q-quantiles (0 < q ≤ 1) in the order asked.
func (h *latencyHist) quantiles(qs ...float64) []time.Duration {
	var counts [len(h.buckets)]uint64
	var total uint64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	out := make([]time.Duration, len(qs))
	if total == 0 {
		return out
	}
	for k, q := range qs {
		rank := uint64(q*float64(total) + 0.5)
		rank = max(rank, 1)
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				out[k] = time.Duration(histValue(i))
				break
			}
		}
	}
	return out
}

// counters are one client's live numbers.
type counters struct {
	faults, zeroFaults, bytes, prefetched atomic.Uint64
	lat                                   latencyHist
}

func (c *counters) snapshot(s *ClientStats) {
	s.Faults = c.faults.Load()
	s.ZeroFaults = c.zeroFaults.Load()
	s.Bytes = c.bytes.Load()
	s.Prefetched = c.prefetched.Load()
	q := c.lat.quantiles(0.5, 0.99)
	s.P50, s.P99 = q[0], q[1]
}

// WriteStats writes a table of clients to w, one line each.
func WriteStats(w io.Writer, clients []ClientStats) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tPID\tUPTIME\tFAULTS\tZERO\tPREFETCHED\tBYTES\tP50\tP99")
	for _, c := range clients {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", c.ID, c.PID,
			time.Since(c.Started).Round(time.Millisecond), c.Faults, c.ZeroFaults, c.Prefetched, c.Bytes, c.P50, c.P99)
	}
	return tw.Flush()
}
