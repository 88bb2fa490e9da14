package channel

import (
	"io"
	"sync"
)

// Stream is the sending side of one stream, shared by every goroutine that
// sends on it (output copies, a stdin pump, resize and signal
// forwarders): whole frames go out one at a time, never interleaved.
type Stream struct {
	mu sync.Mutex // guards writes to w
	w  io.Writer
}

// NewStream returns a Stream that writes frames to w.
func NewStream(w io.Writer) *Stream { return &Stream{w: w} }

// Send writes one frame.
func (s *Stream) Send(t FrameType, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return WriteFrame(s.w, t, payload)
}

// stdinChunk is the most one FrameStdin carries.
const stdinChunk = 32 << 10

// PumpStdin sends what r yields as FrameStdin frames until r ends, then
// FrameStdinEOF. It returns true when r ended (and the EOF frame was
// sent), false when a send failed first: the stream is gone, and r may
// still hold input for a later stream.
func (s *Stream) PumpStdin(r io.Reader) bool {
	buf := make([]byte, stdinChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 && s.Send(FrameStdin, buf[:n]) != nil {
			return false
		}
		if err != nil {
			return s.Send(FrameStdinEOF, nil) == nil
		}
	}
}
