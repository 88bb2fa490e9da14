package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// TestConcurrentWrites: writers racing with readers lose nothing (run
// with -race to see the point of the mutex).
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				b.Write([]byte("x"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if b.Len() != 800 || b.String() != strings.Repeat("x", 800) {
		t.Fatalf("have %d bytes, want 800", b.Len())
	}
}
