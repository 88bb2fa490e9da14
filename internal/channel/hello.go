package channel

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Version is the protocol version both ends must speak. Version 2 escapes
// the host's session bytes (escape.go).
const Version = 2

// helloMagic follows helloMark at the start of every Hello. Version 1
// Hellos had it without the mark, so an end of either version finds the
// other's Hello and reports the version mismatch instead of timing out.
var helloMagic = [8]byte{'F', 'C', 'V', 'M', 0xf0, 0x9f, 0x90, 0x9d}

// HelloMagic returns the bytes every Hello starts with.
func HelloMagic() []byte { return append([]byte{helloMark}, helloMagic[:]...) }

// helloSize is the encoded size of a Hello: mark, magic, version (2),
// flags (2), generation (8), nonce (16).
const helloSize = 1 + 8 + 2 + 2 + 8 + 16

// Hello is the handshake message. The host sends one; the guest answers
// with the same nonce and its own last-seen generation.
type Hello struct {
	Version    uint16
	Generation uint64
	Nonce      [16]byte
}

// ErrVersion is returned when the peer speaks another protocol version.
var ErrVersion = errors.New("channel: protocol version mismatch")

// MarshalBinary encodes h.
func (h Hello) MarshalBinary() ([]byte, error) {
	b := make([]byte, helloSize)
	b[0] = helloMark
	copy(b[1:], helloMagic[:])
	binary.BigEndian.PutUint16(b[9:], h.Version)
	binary.BigEndian.PutUint64(b[13:], h.Generation)
	copy(b[21:], h.Nonce[:])
	return b, nil
}

// UnmarshalBinary decodes a Hello, magic included.
func (h *Hello) UnmarshalBinary(b []byte) error {
	if len(b) != helloSize {
		return fmt.Errorf("decode hello: %d bytes, want %d", len(b), helloSize)
	}
	if b[0] != helloMark || !bytes.Equal(b[1:9], helloMagic[:]) {
		return errors.New("decode hello: bad magic")
	}
	h.Version = binary.BigEndian.Uint16(b[9:])
	h.Generation = binary.BigEndian.Uint64(b[13:])
	copy(h.Nonce[:], b[21:])
	return nil
}

// maxSkip bounds how much stale input a handshake discards before it gives
// up: a session's in-flight window is at most a few hundred KiB.
const maxSkip = 16 << 20

// readHello skips input until a Hello, then decodes it. br keeps any bytes
// read past it, which belong to the session that follows. The guest wants
// the mark too (stale session bytes of the host's, escaped, never hold
// one, so no data can pass for a Hello); the host takes the magic alone,
// so that a version 1 guest's answer is understood well enough to refuse.
func readHello(br *bufio.Reader, withMark bool) (Hello, error) {
	want := helloMagic[:]
	if withMark {
		want = HelloMagic()
	}
	skipped := 0
	matched := 0
	for {
		c, err := br.ReadByte()
		if err != nil {
			return Hello{}, fmt.Errorf("read hello: %w", err)
		}
		// Neither pattern repeats its first byte, so a mismatch restarts
		// the match at most at this byte.
		switch {
		case c == want[matched]:
			matched++
		case c == want[0]:
			matched = 1
		default:
			matched = 0
		}
		if matched == len(want) {
			break
		}
		skipped++
		if skipped > maxSkip {
			return Hello{}, errors.New("read hello: no handshake in 16 MiB of input")
		}
	}
	rest := make([]byte, helloSize)
	rest[0] = helloMark
	copy(rest[1:], helloMagic[:])
	if _, err := io.ReadFull(br, rest[9:]); err != nil {
		return Hello{}, fmt.Errorf("read hello: %w", err)
	}
	var h Hello
	if err := h.UnmarshalBinary(rest); err != nil {
		return Hello{}, err
	}
	return h, nil
}

// Deadliner is the part of net.Conn a handshake uses to bound its wait.
type Deadliner interface {
	SetDeadline(t time.Time) error
}

// HostHandshake sends a Hello carrying generation over rw and waits for the
// guest's answer. It returns the generation the guest had seen before this
// handshake, and a reader that must be used for everything read after it.
func HostHandshake(rw io.ReadWriter, generation uint64) (guestGen uint64, r io.Reader, err error) {
	h := Hello{Version: Version, Generation: generation}
	if _, err := rand.Read(h.Nonce[:]); err != nil {
		return 0, nil, fmt.Errorf("host handshake: %w", err)
	}
	b, _ := h.MarshalBinary()
	if _, err := rw.Write(b); err != nil {
		return 0, nil, fmt.Errorf("host handshake: send hello: %w", err)
	}
	br := bufio.NewReader(rw)
	for {
		reply, err := readHello(br, false)
		if err != nil {
			return 0, nil, fmt.Errorf("host handshake: %w", err)
		}
		if reply.Nonce != h.Nonce {
			continue // an answer to an earlier attempt
		}
		if reply.Version != Version {
			return 0, nil, fmt.Errorf("host handshake: guest speaks version %d, host %d: %w (rebuild the guest agent with `fcvm setup`)", reply.Version, Version, ErrVersion)
		}
		return reply.Generation, br, nil
	}
}

// GuestHandshake waits for the host's Hello on rw and answers it, reporting
// lastGen (the generation the guest saw before). It returns the host's
// Hello and the session's reader, which unescapes the host's bytes.
func GuestHandshake(rw io.ReadWriter, lastGen uint64) (Hello, *SessionReader, error) {
	br := bufio.NewReader(rw)
	h, err := readHello(br, true)
	if err != nil {
		return Hello{}, nil, fmt.Errorf("guest handshake: %w", err)
	}
	reply := Hello{Version: Version, Generation: lastGen, Nonce: h.Nonce}
	b, _ := reply.MarshalBinary()
	if _, err := rw.Write(b); err != nil {
		return Hello{}, nil, fmt.Errorf("guest handshake: answer: %w", err)
	}
	if h.Version != Version {
		return h, nil, fmt.Errorf("guest handshake: host speaks version %d, guest %d: %w", h.Version, Version, ErrVersion)
	}
	return h, newSessionReader(br), nil
}
