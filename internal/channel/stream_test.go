package channel

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
)

// TestStreamFramesDoNotInterleave: frames sent from many goroutines at
// once arrive whole.
func TestStreamFramesDoNotInterleave(t *testing.T) {
	var buf bytes.Buffer
	s := NewStream(&buf)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte('a' + i)}, 1000)
			for range 50 {
				if err := s.Send(FrameStdout, p); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for n := 0; ; n++ {
		f, err := ReadFrame(&buf)
		if errors.Is(err, io.EOF) {
			if n != 400 {
				t.Errorf("%d frames, want 400", n)
			}
			return
		}
		if err != nil {
			t.Fatalf("frame %d: %v", n, err)
		}
		if len(f.Payload) != 1000 || strings.Trim(string(f.Payload), string(f.Payload[:1])) != "" {
			t.Fatalf("frame %d is mixed: %q...", n, f.Payload[:20])
		}
	}
}

func TestPumpStdin(t *testing.T) {
	var buf bytes.Buffer
	in := strings.Repeat("x", stdinChunk+10)
	if !NewStream(&buf).PumpStdin(strings.NewReader(in)) {
		t.Fatal("PumpStdin reported a failed send")
	}
	var got strings.Builder
	for {
		f, err := ReadFrame(&buf)
		if err != nil {
			t.Fatalf("no FrameStdinEOF after %d bytes: %v", got.Len(), err)
		}
		if f.Type == FrameStdinEOF {
			break
		}
		if f.Type != FrameStdin || len(f.Payload) > stdinChunk {
			t.Fatalf("frame type %d of %d bytes", f.Type, len(f.Payload))
		}
		got.Write(f.Payload)
	}
	if got.String() != in {
		t.Errorf("pumped %d bytes, want %d", got.Len(), len(in))
	}
	// A stream that is gone stops the pump without an EOF frame.
	if NewStream(failWriter{}).PumpStdin(strings.NewReader("abc")) {
		t.Error("PumpStdin over a broken stream reported the input's end")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }
