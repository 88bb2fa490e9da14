package supervisor

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/state"
)

// hostileMachine stands for a VMM whose guest answers every handshake and
// then closes the connection at once, or with refuse, closes it without
// answering.
type hostileMachine struct {
	refuse bool
	dials  atomic.Int64
	done   chan struct{}
}

func (m *hostileMachine) PID() int { return 0 }

func (m *hostileMachine) DialChannel(ctx context.Context) (net.Conn, error) {
	m.dials.Add(1)
	host, guest := net.Pipe()
	go func() {
		defer guest.Close()
		if !m.refuse {
			channel.GuestHandshake(guest, 1)
		}
	}()
	return host, nil
}

func (m *hostileMachine) Wait() error { <-m.done; return nil }

func (m *hostileMachine) Stop(context.Context, time.Duration) error { return nil }

func testVM(t *testing.T, m *hostileMachine) *VM {
	t.Helper()
	dir := t.TempDir()
	return &VM{
		Record:  &state.Record{ID: "test", Dir: dir, RuntimeDir: dir},
		Machine: m,
		Plan:    &channel.Plan{},
		started: true, // a clone: attach without starting
		exited:  make(chan struct{}),
		log:     slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

// TestReconnectBackoff runs a VM whose guest closes every session as soon
// as it is made: the supervisor must keep trying at a bounded pace, not
// in a tight loop (each attempt is a dial, a session and a log line).
func TestReconnectBackoff(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		m := &hostileMachine{refuse: refuse, done: make(chan struct{})}
		defer close(m.done)
		vm := testVM(t, m)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := vm.Run(ctx, Stdio{}, nil)
		if err == nil {
			t.Fatal("Run against a guest that closes every connection returned no error")
		}
		// 0, 10, 20, 40, 80, 160, 320, 640, 1280 ms (jitter only
		// shortens the later ones by up to half): at most a dozen in 3 s.
		n := m.dials.Load()
		t.Logf("refuse the handshake %v: %d dials in 3s", refuse, n)
		if n > 20 {
			t.Errorf("refuse the handshake %v: %d dials in 3s: reconnecting without backoff", refuse, n)
		}
		if n < 3 {
			t.Errorf("refuse the handshake %v: %d dials in 3s: the supervisor gave up", refuse, n)
		}
	}
}

// TestConsoleTail fills the console log far past what an error shows and
// checks that the tail is its last lines, escaped, read from the end.
func TestConsoleTail(t *testing.T) {
	vm := testVM(t, &hostileMachine{})
	var b strings.Builder
	for range 100000 {
		b.WriteString("boot noise\r\n")
	}
	b.WriteString("Kernel panic\x1b]0;owned\x07\x1b[2J\r\n")
	if err := os.WriteFile(filepath.Join(vm.Record.Dir, "console.log"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got := vm.consoleTail()
	if strings.ContainsAny(got, "\x1b\x07\r") {
		t.Errorf("console tail carries control characters: %q", got)
	}
	lines := strings.Split(got, "\n")
	if len(lines) != 1+consoleTailLines {
		t.Errorf("console tail has %d lines, want a heading and %d", len(lines), consoleTailLines)
	}
	if last := lines[len(lines)-1]; last != `  Kernel panic\x1b]0;owned\x07\x1b[2J` {
		t.Errorf("last line %q", last)
	}
	if lines[1] != "  boot noise" {
		t.Errorf("first line %q: a line cut by the read", lines[1])
	}
}
