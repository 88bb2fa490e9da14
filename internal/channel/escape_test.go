package channel

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"testing/iotest"
	"time"
)

// hostile is data that holds everything the escaping is about: the Hello's
// mark and magic, escape bytes, escape bytes followed by what follows them
// in an escape, at the start, in the middle and at the end.
func hostile() []byte {
	h, _ := Hello{Version: Version, Generation: 5}.MarshalBinary()
	var b []byte
	b = append(b, h...)
	b = append(b, []byte("plain text")...)
	b = append(b, helloMark, escByte, escMark, escByte, escEsc, escByte, escByte, helloMark, helloMark)
	b = append(b, HelloMagic()...)
	r := rand.New(rand.NewPCG(1, 2))
	for range 4096 {
		b = append(b, []byte{helloMark, escByte, escMark, escEsc, 'F', 0}[r.IntN(6)])
	}
	return append(b, h...)
}

// escape returns what the host sends for data, written in chunks of the
// given sizes (the last one repeated).
func escape(t testing.TB, data []byte, chunks ...int) []byte {
	var out bytes.Buffer
	w := &escapeWriter{w: &out}
	for i := 0; len(data) > 0; i++ {
		n := chunks[min(i, len(chunks)-1)]
		n = min(n, len(data))
		if m, err := w.Write(data[:n]); err != nil || m != n {
			t.Fatalf("write: %d %v", m, err)
		}
		data = data[n:]
	}
	return out.Bytes()
}

func TestEscapeRoundTrip(t *testing.T) {
	data := hostile()
	for _, chunks := range [][]int{{len(data)}, {1}, {3, 7, 1}, {4096}} {
		raw := escape(t, data, chunks...)
		if bytes.IndexByte(raw, helloMark) >= 0 {
			t.Fatalf("chunks %v: the mark is in the escaped bytes", chunks)
		}
		for name, r := range map[string]io.Reader{
			"whole":    bytes.NewReader(raw),
			"one byte": iotest.OneByteReader(bytes.NewReader(raw)),
			"halves":   iotest.HalfReader(bytes.NewReader(raw)),
		} {
			got, err := io.ReadAll(newSessionReader(bufio.NewReader(r)))
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("chunks %v, %s: read %d bytes (%v), want %d identical", chunks, name, len(got), err, len(data))
			}
		}
	}
}

func TestSessionReaderResync(t *testing.T) {
	data := hostile()
	h, _ := Hello{Version: Version, Generation: 9}.MarshalBinary()
	after := []byte("the next session's first bytes")
	raw := append(append(escape(t, data, 100), h...), after...)
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(raw),
		"one byte": iotest.OneByteReader(bytes.NewReader(raw)),
	} {
		s := newSessionReader(bufio.NewReader(r))
		got, err := io.ReadAll(s)
		if !errors.Is(err, ErrResync) || !bytes.Equal(got, data) {
			t.Fatalf("%s: read %d bytes, %v; want %d and ErrResync", name, len(got), err, len(data))
		}
		if _, err := s.Read(make([]byte, 10)); !errors.Is(err, ErrResync) {
			t.Errorf("%s: read after the resync: %v", name, err)
		}
		// What the next handshake reads: the Hello, then the rest of the
		// input (the part still unread in r, here none for "whole").
		next := bufio.NewReader(io.MultiReader(bytes.NewReader(s.Rest()), r))
		hello, err := readHello(next, true)
		if err != nil || hello.Generation != 9 {
			t.Fatalf("%s: hello after the resync: %+v %v", name, hello, err)
		}
		if rest, _ := io.ReadAll(next); !bytes.Equal(rest, after) {
			t.Errorf("%s: after the hello %q, want %q", name, rest, after)
		}
	}
}

func TestSessionReaderBadEscape(t *testing.T) {
	s := newSessionReader(bufio.NewReader(bytes.NewReader([]byte{'a', escByte, 'x', 'b'})))
	got, err := io.ReadAll(s)
	if !errors.Is(err, errBadEscape) || string(got) != "a" {
		t.Fatalf("read %q, %v; want \"a\" and a bad escape", got, err)
	}
	if s.Rest() != nil {
		t.Error("a bad escape is no resync")
	}
}

// TestSessionCarriesHelloBytes sends the Hello's own bytes through a real
// session both ways: the guest's session must not end.
func TestSessionCarriesHelloBytes(t *testing.T) {
	host, guest := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		_, r, err := GuestHandshake(guest, 0)
		if err != nil {
			served <- err
			return
		}
		served <- Serve(ctx, guest, r, testLog(t), func(ctx context.Context, req Request, s net.Conn) {
			defer s.Close()
			Reply(s, nil)
			for {
				f, err := ReadFrame(s)
				if err != nil || f.Type != FrameStdin {
					return
				}
				WriteFrame(s, FrameStdout, f.Payload)
			}
		})
	}()
	c, err := NewClient(host, 1, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := hostile()
	for i := range 3 {
		s, _, err := c.Open(ctx, Request{Kind: KindExec, Exec: &ExecRequest{Cmd: []string{"cat"}}})
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if err := WriteFrame(s, FrameStdin, data); err != nil {
			t.Fatal(err)
		}
		f, err := ReadFrame(s)
		if err != nil || f.Type != FrameStdout || !bytes.Equal(f.Payload, data) {
			t.Fatalf("stream %d: echo %v (%d bytes), want the %d bytes sent", i, err, len(f.Payload), len(data))
		}
		s.Close()
	}
	select {
	case err := <-served:
		t.Fatalf("the guest's session ended: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
}

func FuzzEscapeRoundTrip(f *testing.F) {
	f.Add(hostile(), uint8(3))
	f.Add([]byte{escByte}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		raw := escape(t, data, int(chunk)+1)
		if bytes.IndexByte(raw, helloMark) >= 0 {
			t.Fatal("the mark is in the escaped bytes")
		}
		got, err := io.ReadAll(newSessionReader(bufio.NewReader(iotest.HalfReader(bytes.NewReader(raw)))))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzSessionReader feeds the guest's session reader whatever a broken or
// hostile carrier could: it must end with data, a resync or an error, and
// never hand out more than it was given.
func FuzzSessionReader(f *testing.F) {
	f.Add(hostile())
	f.Add(append(escape(f, []byte("data"), 2), HelloMagic()...))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := newSessionReader(bufio.NewReader(bytes.NewReader(raw)))
		got, err := io.ReadAll(s)
		if len(got) > len(raw) {
			t.Fatalf("decoded %d bytes from %d", len(got), len(raw))
		}
		if errors.Is(err, ErrResync) && !bytes.HasPrefix(s.Rest(), []byte{helloMark}) {
			t.Fatalf("rest %q does not start with the mark", s.Rest())
		}
	})
}

// BenchmarkEscape is the host's cost per byte of a session: random data
// (about 1 byte in 128 escaped) and text (none).
func BenchmarkEscape(b *testing.B) {
	for name, data := range benchData() {
		b.Run(name, func(b *testing.B) {
			w := &escapeWriter{w: io.Discard}
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				w.Write(data)
			}
		})
	}
}

// BenchmarkSessionReader is the guest's cost per byte of a session.
func BenchmarkSessionReader(b *testing.B) {
	for name, data := range benchData() {
		b.Run(name, func(b *testing.B) {
			raw := escape(b, data, len(data))
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				s := newSessionReader(bufio.NewReader(bytes.NewReader(raw)))
				for {
					if _, err := s.Read(buf); err != nil {
						break
					}
				}
			}
		})
	}
}

func benchData() map[string][]byte {
	random := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	return map[string][]byte{"random": random, "text": bytes.Repeat([]byte("0123456789abcdef"), 1<<16)}
}
