package channel

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// The host escapes every session byte it sends after the handshake so that
// helloMark, the first byte of every Hello, never appears in a session:
// the guest can then tell a new host's Hello (a restored clone whose new
// host connected while the guest still runs the old session) from data,
// whatever the data is. Without it, a file the user copies in or a volume
// holding the Hello's bytes (the fc-agent binary does) ended the session.
// The guest's replies need no escaping: the host reads them only during
// its handshake and matches its own random nonce.
const (
	helloMark = 0xC0 // starts every Hello; never unescaped in a session
	escByte   = 0xDB // escByte escMark is helloMark, escByte escEsc is escByte
	escMark   = 0xDC
	escEsc    = 0xDD
)

// ErrResync is a session's end because the host started a new handshake;
// the guest hands SessionReader.Rest to its next handshake.
var ErrResync = errors.New("channel: the host started a new handshake")

// errBadEscape is a session byte stream that no host writes.
var errBadEscape = errors.New("channel: bad escape in the host's session bytes")

// escapeWriter escapes what it writes to w.
type escapeWriter struct {
	w   io.Writer
	mu  sync.Mutex // guards buf
	buf []byte
}

func (e *escapeWriter) Write(p []byte) (int, error) {
	if nextSpecial(p, helloMark) == len(p) {
		if _, err := e.w.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	buf := e.buf[:0]
	for rest := p; len(rest) > 0; {
		i := nextSpecial(rest, helloMark)
		buf = append(buf, rest[:i]...)
		if i == len(rest) {
			break
		}
		if rest[i] == helloMark {
			buf = append(buf, escByte, escMark)
		} else {
			buf = append(buf, escByte, escEsc)
		}
		rest = rest[i+1:]
	}
	e.buf = buf
	if _, err := e.w.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// specialWindow bounds how far nextSpecial looks, so that finding bytes
// one at a time in a long buffer never rescans it.
const specialWindow = 4 << 10

// nextSpecial is the index of b's first helloMark or escByte, or len(b)
// if neither is in b. It leaves the search to bytes.IndexByte, which is
// vectorised (a session moves megabytes, under TCG too), and looks for the
// other byte only before the first one it finds: likely names the byte
// more frequent in b (in escaped bytes, escByte; a mark there is rare), so
// that neither search runs far past the answer.
func nextSpecial(b []byte, likely byte) int {
	other := byte(helloMark)
	if likely == helloMark {
		other = escByte
	}
	for base := 0; base < len(b); base += specialWindow {
		w := b[base:min(base+specialWindow, len(b))]
		i := bytes.IndexByte(w, likely)
		if i >= 0 {
			w = w[:i]
		}
		if j := bytes.IndexByte(w, other); j >= 0 {
			return base + j
		}
		if i >= 0 {
			return base + i
		}
	}
	return len(b)
}

// sessionChunk is how much raw input a SessionReader decodes at a time.
const sessionChunk = 32 << 10

// SessionReader is the guest's reader of a session: it unescapes the
// host's bytes, and ends with ErrResync where a new Hello starts.
type SessionReader struct {
	br    *bufio.Reader // the handshake's reader
	raw   []byte        // raw input; raw[off:] not yet decoded
	off   int
	esc   bool  // the last raw byte decoded was escByte
	err   error // sticky: ErrResync or errBadEscape
	inErr error // the input's error, returned once raw is decoded
}

func newSessionReader(br *bufio.Reader) *SessionReader {
	return &SessionReader{br: br, raw: make([]byte, 0, sessionChunk)}
}

func (s *SessionReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if s.err != nil {
			return 0, s.err
		}
		if s.off == len(s.raw) {
			if s.inErr != nil {
				return 0, s.inErr
			}
			n, err := s.br.Read(s.raw[:cap(s.raw)])
			s.raw, s.off, s.inErr = s.raw[:n], 0, err
			if n == 0 && err == nil {
				return 0, nil
			}
		}
		if n := s.decode(p); n > 0 {
			return n, nil
		}
	}
}

// decode unescapes raw input into p until one of them runs out or a new
// Hello starts.
func (s *SessionReader) decode(p []byte) int {
	n := 0
	for s.off < len(s.raw) && n < len(p) {
		if s.esc {
			switch s.raw[s.off] {
			case escMark:
				p[n] = helloMark
			case escEsc:
				p[n] = escByte
			default:
				s.err = errBadEscape
				return n
			}
			s.esc = false
			s.off++
			n++
			continue
		}
		in := s.raw[s.off:min(len(s.raw), s.off+len(p)-n)]
		if i := nextSpecial(in, escByte); i > 0 {
			n += copy(p[n:], in[:i])
			s.off += i
			continue
		}
		if in[0] == helloMark {
			s.err = ErrResync
			return n
		}
		s.esc = true
		s.off++
	}
	return n
}

// Rest is, once Read has returned ErrResync, the input from the new
// Hello on: what the next handshake must read first. It is at most a
// chunk and the handshake reader's buffer.
func (s *SessionReader) Rest() []byte {
	if s.err != ErrResync {
		return nil
	}
	rest := append([]byte(nil), s.raw[s.off:]...)
	if n := s.br.Buffered(); n > 0 {
		b, _ := s.br.Peek(n)
		rest = append(rest, b...)
	}
	return rest
}
