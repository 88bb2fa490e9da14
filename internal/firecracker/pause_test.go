package firecracker

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPauseResume: pause and resume are one spec-valid PATCH /vm each,
// with the states Firecracker names.
func TestPauseResume(t *testing.T) {
	cfg := fullConfig(t, t.TempDir())
	d, rec := standinDriver(t, "api", Options{BootPlan: testPlan, Log: testLogger(t)})
	m, err := d.StartMachine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer stopMachine(t, m)
	booted := len(readRecord(t, rec))
	if err := m.Pause(t.Context()); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if err := m.Resume(t.Context()); err != nil {
		t.Fatalf("resume: %v", err)
	}
	calls := readRecord(t, rec)[booted:]
	assertValid(t, calls)
	if diff := cmp.Diff([]string{"PATCH /vm", "PATCH /vm"}, ops(calls)); diff != "" {
		t.Fatalf("pause, resume (-want +got):\n%s", diff)
	}
	for i, want := range []string{"Paused", "Resumed"} {
		if s := bodyOf(t, calls[i:i+1], "PATCH /vm")["state"]; s != want {
			t.Errorf("PATCH /vm %d: state %v, want %s", i, s, want)
		}
	}
}
