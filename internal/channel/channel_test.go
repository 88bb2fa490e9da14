package channel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	frames := []Frame{
		{FrameStdout, []byte("hello")},
		{FrameStdinEOF, []byte{}},
		{FrameResize, Resize(24, 80)},
		{FrameExit, Uint32(42)},
	}
	for _, f := range frames {
		if err := WriteFrame(&buf, f.Type, f.Payload); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range frames {
		got, err := ReadFrame(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != want.Type || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	if _, err := ReadFrame(&buf); err != io.EOF {
		t.Fatalf("after last frame: %v, want EOF", err)
	}
	rows, cols, err := ParseResize(Resize(24, 80))
	if err != nil || rows != 24 || cols != 80 {
		t.Fatalf("resize: %d %d %v", rows, cols, err)
	}
}

func TestFrameTooLarge(t *testing.T) {
	hdr := []byte{1, 0xff, 0xff, 0xff, 0xff}
	if _, err := ReadFrame(bytes.NewReader(hdr)); err == nil {
		t.Fatal("oversized frame accepted")
	}
}

// TestHandshakeSkipsStaleBytes is the restore case: the stream holds
// leftovers of an earlier session (and an earlier hello) before the real
// handshake.
func TestHandshakeSkipsStaleBytes(t *testing.T) {
	host, guest := socketPair(t)
	defer host.Close()
	defer guest.Close()
	done := make(chan error, 1)
	go func() {
		// The guest first emits garbage and a reply to some older nonce.
		stale := Hello{Version: Version, Generation: 1}
		b, _ := stale.MarshalBinary()
		guest.Write(append([]byte("old yamux bytes FCVM"), b...))
		h, r, err := GuestHandshake(guest, 3)
		if err != nil {
			done <- err
			return
		}
		if h.Generation != 7 {
			t.Errorf("guest saw generation %d, want 7", h.Generation)
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(r, buf)
		if string(buf) != "data" {
			t.Errorf("after handshake guest read %q", buf)
		}
		done <- err
	}()
	// The host also finds stale bytes first: the pipe delivers the
	// guest's garbage to the host's reader.
	gen, _, err := HostHandshake(host, 7)
	if err != nil {
		t.Fatal(err)
	}
	if gen != 3 {
		t.Fatalf("guest generation %d, want 3", gen)
	}
	host.Write([]byte("data"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSessionStreams(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", dir+"/ch.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		_, r, err := GuestHandshake(c, 0)
		if err != nil {
			served <- err
			return
		}
		served <- Serve(ctx, c, r, testLog(t), func(ctx context.Context, req Request, s net.Conn) {
			defer s.Close()
			if req.Kind != KindExec {
				ReplyError(s, io.ErrUnexpectedEOF)
				return
			}
			Reply(s, nil)
			WriteFrame(s, FrameStdout, []byte(req.Exec.Cmd[0]))
			WriteFrame(s, FrameExit, Uint32(3))
		})
	}()
	conn, err := net.Dial("unix", dir+"/ch.sock")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(conn, 1, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 10; i++ {
		s, _, err := c.Open(ctx, Request{Kind: KindExec, Exec: &ExecRequest{Cmd: []string{"echo"}}})
		if err != nil {
			t.Fatal(err)
		}
		f, err := ReadFrame(s)
		if err != nil || f.Type != FrameStdout || string(f.Payload) != "echo" {
			t.Fatalf("frame %+v %v", f, err)
		}
		f, _ = ReadFrame(s)
		if code, _ := ParseUint32(f.Payload); f.Type != FrameExit || code != 3 {
			t.Fatalf("exit frame %+v", f)
		}
		s.Close()
	}
	if _, _, err := c.Open(ctx, Request{Kind: KindStatus}); err == nil {
		t.Fatal("refused request returned no error")
	}
	c.Close()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("guest session did not end after the host closed")
	}
}

func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	WriteFrame(&buf, FrameStdout, []byte("x"))
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ReadFrame(bytes.NewReader(b))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteFrame(&out, fr.Type, fr.Payload); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), b[:out.Len()]) {
			t.Fatal("re-encoding differs")
		}
	})
}

func FuzzGuestHandshake(f *testing.F) {
	h, _ := Hello{Version: Version, Generation: 9}.MarshalBinary()
	f.Add(h)
	f.Add(append([]byte("junk"), h...))
	f.Fuzz(func(t *testing.T, b []byte) {
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(b), io.Discard}
		GuestHandshake(rw, 0)
	})
}

func FuzzReadRequest(f *testing.F) {
	var buf bytes.Buffer
	WriteRequest(&buf, Request{Kind: KindExec, Exec: &ExecRequest{Cmd: []string{"true"}}})
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		ReadRequest(bytes.NewReader(b))
	})
}

// socketPair returns two connected Unix stream sockets: buffered, like the
// real carriers (net.Pipe is synchronous and would deadlock the handshake).
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	ln, err := net.Listen("unix", t.TempDir()+"/p.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestGuestErrorIsEscaped sends a refusal whose text would clear the
// user's screen and retitle the window: the error the host builds from it
// must show the sequences, not carry them, while Msg keeps what was sent.
func TestGuestErrorIsEscaped(t *testing.T) {
	const msg = "no such image\x1b[2J\x1b]0;owned\x07\r\u009b31m"
	var b bytes.Buffer
	if err := ReplyError(&b, errors.New(msg)); err != nil {
		t.Fatal(err)
	}
	_, err := ReadReply(&b)
	var ge *GuestError
	if !errors.As(err, &ge) || ge.Msg != msg {
		t.Fatalf("ReadReply = %v, want a GuestError carrying %q", err, msg)
	}
	got := err.Error()
	if strings.ContainsAny(got, "\x1b\x07\r\u009b") {
		t.Errorf("GuestError.Error() = %q: passes control characters to the terminal", got)
	}
	if want := `guest: no such image\x1b[2J\x1b]0;owned\x07\x0d\u009b31m`; got != want {
		t.Errorf("GuestError.Error() = %q, want %q", got, want)
	}
}
