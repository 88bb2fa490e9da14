package network

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/nettest"
)

// BenchmarkSetupTeardown times Setup and Teardown of a network with a real
// TAP and one published port, per mode, and reports the medians.
func BenchmarkSetupTeardown(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			data := b.TempDir()
			var setup, teardown []time.Duration
			for b.Loop() {
				port := nettest.FreePort(b)
				ports, _ := ParsePublish(fmt.Sprintf("127.0.0.1:%d:80", port))
				cfg := Config{Mode: m.mode, UserNet: m.userNet, ID: newID(b), DataDir: data, RuntimeDir: b.TempDir(), Pool: testPool, Ports: ports, DNS: []string{"127.0.0.1"}, Log: testLog(b)}
				t0 := time.Now()
				n, err := Setup(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := n.Teardown(); err != nil {
					b.Fatal(err)
				}
				setup, teardown = append(setup, t1.Sub(t0)), append(teardown, time.Since(t1))
			}
			med := func(d []time.Duration) float64 {
				slices.Sort(d)
				return float64(d[len(d)/2].Microseconds()) / 1000
			}
			b.ReportMetric(med(setup), "setup-ms-median")
			b.ReportMetric(med(teardown), "teardown-ms-median")
		})
	}
}
