package firecracker

import (
	"testing"
)

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
