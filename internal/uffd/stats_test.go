package uffd

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h latencyHist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	q := h.quantiles(0.5, 0.99)
	for i, want := range []time.Duration{500 * time.Microsecond, 990 * time.Microsecond} {
		if got := q[i]; got < want*90/100 || got > want*110/100 {
			t.Errorf("quantile %d = %v, want about %v", i, got, want)
		}
	}
}

func TestHistogramBucketsRoundTrip(t *testing.T) {
	for _, ns := range []uint64{0, 1, 15, 16, 17, 100, 4096, 1 << 20, 123456789, 1 << 62} {
		i := histBucket(ns)
		v := histValue(i)
		if ns >= 16 && (v < ns-ns/8 || v > ns+ns/8) {
			t.Errorf("bucket %d for %d has value %d, more than 1/8 off", i, ns, v)
		}
	}
}
