package channel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameType says what a frame's payload is.
type FrameType uint8

// Frame types. Output frames (Stdout, Stderr) on an attach stream carry an
// 8-byte sequence number before the data; on an exec stream they carry data
// only.
const (
	FrameStdout   FrameType = 1  // guest → host
	FrameStderr   FrameType = 2  // guest → host
	FrameStdin    FrameType = 3  // host → guest
	FrameStdinEOF FrameType = 4  // host → guest, empty
	FrameResize   FrameType = 5  // host → guest: rows u16, cols u16
	FrameSignal   FrameType = 6  // host → guest: signal number u32
	FrameExit     FrameType = 7  // guest → host: exit code i32
	FrameError    FrameType = 8  // either way: a UTF-8 message, ends the stream
	FrameOK       FrameType = 9  // guest → host: the request was accepted; payload optional JSON
	FrameAck      FrameType = 10 // host → guest: sequence number u64 received and stored
)

// MaxFrame bounds a frame's payload so a corrupt length cannot make a peer
// allocate without limit.
const MaxFrame = 1 << 20

// ErrFrameTooLarge is returned for a frame whose length exceeds MaxFrame.
var ErrFrameTooLarge = errors.New("channel: frame too large")

// Frame is one typed message on a stream.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// WriteFrame writes one frame. It makes a single Write call so frames from
// one writer are never interleaved by a concurrent writer that also uses
// WriteFrame on a yamux stream.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("write frame type %d: %d bytes: %w", t, len(payload), ErrFrameTooLarge)
	}
	b := make([]byte, 5+len(payload))
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	copy(b[5:], payload)
	_, err := w.Write(b)
	return err
}

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return Frame{}, fmt.Errorf("read frame type %d: %d bytes: %w", hdr[0], n, ErrFrameTooLarge)
	}
	f := Frame{Type: FrameType(hdr[0]), Payload: make([]byte, n)}
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return f, nil
}

// Uint32 encodes n as a 4-byte payload.
func Uint32(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// Uint64 encodes n as an 8-byte payload.
func Uint64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// Resize encodes a terminal size.
func Resize(rows, cols uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, rows)
	return binary.BigEndian.AppendUint16(b, cols)
}

// ParseResize decodes a FrameResize payload.
func ParseResize(p []byte) (rows, cols uint16, err error) {
	if len(p) != 4 {
		return 0, 0, fmt.Errorf("decode resize: %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:]), nil
}

// ParseUint32 decodes a 4-byte payload (signal, exit code).
func ParseUint32(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("decode u32: %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint32(p), nil
}

// ParseUint64 decodes an 8-byte payload (ack).
func ParseUint64(p []byte) (uint64, error) {
	if len(p) != 8 {
		return 0, fmt.Errorf("decode u64: %d bytes, want 8", len(p))
	}
	return binary.BigEndian.Uint64(p), nil
}

// Output is a decoded output frame of an attach stream.
type Output struct {
	Seq  uint64
	Data []byte
}

// EncodeOutput builds the payload of an attach stream's output frame.
func EncodeOutput(seq uint64, data []byte) []byte {
	b := make([]byte, 8+len(data))
	binary.BigEndian.PutUint64(b, seq)
	copy(b[8:], data)
	return b
}

// ParseOutput decodes an attach stream's output frame payload.
func ParseOutput(p []byte) (Output, error) {
	if len(p) < 8 {
		return Output{}, fmt.Errorf("decode output: %d bytes, want at least 8", len(p))
	}
	return Output{Seq: binary.BigEndian.Uint64(p), Data: p[8:]}, nil
}
