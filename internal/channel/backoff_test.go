package channel

import (
	"context"
	"testing"
	"time"
)

func TestBackoffGrowsToMaxAndResets(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond}
	if d := b.Next(); d != 0 {
		t.Fatalf("first retry waits %s, want 0", d)
	}
	want := []time.Duration{10, 20, 40, 80, 160, 200, 200, 200}
	for i, w := range want {
		w *= time.Millisecond
		d := b.Next()
		if d < w/2 || d > w {
			t.Errorf("retry %d waits %s, want %s less up to half", i+2, d, w)
		}
	}
	b.Reset()
	if d := b.Next(); d != 0 {
		t.Errorf("first retry after Reset waits %s, want 0", d)
	}
	if d := b.Next(); d < 5*time.Millisecond || d > 10*time.Millisecond {
		t.Errorf("second retry after Reset waits %s, want 5-10ms", d)
	}
}

// TestBackoffBoundsAttempts retries as fast as Wait lets it for half a
// second, as a supervisor does against a guest that closes every session
// at once: the attempts stay a handful, not thousands.
func TestBackoffBoundsAttempts(t *testing.T) {
	var b Backoff
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	attempts := 0
	for b.Wait(ctx) == nil {
		attempts++
	}
	// 0, then 5-10, 10-20, 20-40, 40-80, 80-160, 160-320 ms: at most 8
	// fit in 500 ms.
	if attempts < 3 || attempts > 8 {
		t.Errorf("%d attempts in 500ms, want 3 to 8", attempts)
	}
	if err := b.Wait(ctx); err == nil {
		t.Error("Wait after the context ended = nil")
	}
}
