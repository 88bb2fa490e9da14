package channel

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff spaces out reconnections to a guest whose sessions keep
// breaking. A guest can accept a connection, answer the handshake and
// close at once, as often as the host dials: without a pause between
// attempts each costs the host a dial, a session and a log line, as fast
// as it can go.
//
// The first retry after a Reset is immediate (a snapshot broke a healthy
// session: the guest is back at once); each one after that waits twice as
// long as the last, from Min up to Max, less a random part of up to half,
// so that many VMs broken at one moment do not retry in step. The zero
// Backoff waits 10 ms to 2 s.
type Backoff struct {
	Min, Max time.Duration

	n int // retries since the last Reset
}

// Next returns how long to wait before the next attempt, and counts it.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 10 * time.Millisecond
	}
	if hi <= 0 {
		hi = 2 * time.Second
	}
	n := b.n
	b.n++
	if n == 0 {
		return 0
	}
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d - rand.N(d/2+1)
}

// Reset makes the next retry immediate again: call it once a session has
// worked.
func (b *Backoff) Reset() { b.n = 0 }

// Wait sleeps for Next, or until ctx is done, whose error it returns.
func (b *Backoff) Wait(ctx context.Context) error {
	d := b.Next()
	if d == 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
