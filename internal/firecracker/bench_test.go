package firecracker

import (
	"testing"
)

// BenchmarkLoadSpecUncached is what each fcvm process pays once before its
// first launch: parse, convert and index the embedded spec.
func BenchmarkLoadSpecUncached(b *testing.B) {
	for b.Loop() {
		// Call the function LoadSpec wraps, bypassing the cache.
		if _, err := loadSpec(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlanAndValidateBoot is the per-launch cost of building and
// validating the boot requests for fcvm's usual VM.
func BenchmarkPlanAndValidateBoot(b *testing.B) {
	t := &testing.T{}
	cfg := fullConfig(t, b.TempDir())
	o := Options{BootPlan: testPlan, Metrics: true, Entropy: true}
	if _, err := LoadSpec(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		reqs, err := bootRequests(cfg, &o, newPlan(cfg, ""))
		if err != nil {
			b.Fatal(err)
		}
		if err := validateAll(reqs); err != nil {
			b.Fatal(err)
		}
	}
}
