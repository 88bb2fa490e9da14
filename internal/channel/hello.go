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

// Version is the protocol version both ends must speak.
const Version = 1

// helloMagic starts every Hello. It is long and unusual enough that stale
// yamux frames never contain it by chance.
var helloMagic = [8]byte{'F', 'C', 'V', 'M', 0xf0, 0x9f, 0x90, 0x9d}

// HelloMagic returns the bytes every Hello starts with, for carriers that
// watch a live session's input for a new handshake (a restored guest whose
// host reconnected under it).
func HelloMagic() []byte { return append([]byte(nil), helloMagic[:]...) }

// helloSize is the encoded size of a Hello: magic, version (2), flags (2),
// generation (8), nonce (16).
const helloSize = 8 + 2 + 2 + 8 + 16

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
	copy(b, helloMagic[:])
	binary.BigEndian.PutUint16(b[8:], h.Version)
	binary.BigEndian.PutUint64(b[12:], h.Generation)
	copy(b[20:], h.Nonce[:])
	return b, nil
}

// UnmarshalBinary decodes a Hello, magic included.
func (h *Hello) UnmarshalBinary(b []byte) error {
	if len(b) != helloSize {
		return fmt.Errorf("decode hello: %d bytes, want %d", len(b), helloSize)
	}
	if !bytes.Equal(b[:8], helloMagic[:]) {
		return errors.New("decode hello: bad magic")
	}
	h.Version = binary.BigEndian.Uint16(b[8:])
	h.Generation = binary.BigEndian.Uint64(b[12:])
	copy(h.Nonce[:], b[20:])
	return nil
}

// maxSkip bounds how much stale input a handshake discards before it gives
// up: a session's in-flight window is at most a few hundred KiB.
const maxSkip = 16 << 20

// readHello skips input until the magic, then decodes one Hello. br keeps
// any bytes read past it, which belong to the session that follows.
func readHello(br *bufio.Reader) (Hello, error) {
	skipped := 0
	matched := 0
	for {
		c, err := br.ReadByte()
		if err != nil {
			return Hello{}, fmt.Errorf("read hello: %w", err)
		}
		switch {
		case c == helloMagic[matched]:
			matched++
		case c == helloMagic[0]:
			matched = 1
		default:
			matched = 0
		}
		if matched == len(helloMagic) {
			break
		}
		skipped++
		if skipped > maxSkip {
			return Hello{}, errors.New("read hello: no handshake in 16 MiB of input")
		}
	}
	rest := make([]byte, helloSize)
	copy(rest, helloMagic[:])
	if _, err := io.ReadFull(br, rest[8:]); err != nil {
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
		reply, err := readHello(br)
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
// Hello and a reader for what follows.
func GuestHandshake(rw io.ReadWriter, lastGen uint64) (Hello, io.Reader, error) {
	br := bufio.NewReader(rw)
	h, err := readHello(br)
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
	return h, br, nil
}
