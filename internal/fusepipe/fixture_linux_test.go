package fusepipe

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// testLog sends a component's log to t.Log.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// socketPair returns both ends of a connected Unix stream socket as
// net.Conns, the transport the tests stand in for a VM channel with.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conn := func(fd int, name string) net.Conn {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatalf("fileconn: %v", err)
		}
		return c
	}
	return conn(fds[0], "host"), conn(fds[1], "guest")
}

// share is a host directory served over a socket pair and mounted.
type share struct {
	dir    string // the host directory
	mnt    string // where the guest sees it
	srv    *Server
	client *Client
	served chan error
}

type shareOpts struct {
	readOnly      bool
	worldReadable bool // other users can reach the mount (and run the test binary)
	mount         MountOptions
}

// newShare serves a fresh temporary directory and mounts it, unmounting
// and stopping the server at cleanup.
func newShare(t testing.TB, o shareOpts) *share {
	t.Helper()
	base := t.TempDir()
	if o.worldReadable {
		for d := base; d != os.TempDir(); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := &share{dir: filepath.Join(base, "host"), mnt: filepath.Join(base, "mnt"), served: make(chan error, 1)}
	for _, d := range []string{s.dir, s.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mountShare(t, s, o)
	return s
}

func mountShare(t testing.TB, s *share, o shareOpts) {
	t.Helper()
	srv, err := NewServer(s.dir, ServerOptions{ReadOnly: o.readOnly, Log: testLog(t)})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	s.srv = srv
	hostEnd, guestEnd := socketPair(t)
	go func() { s.served <- srv.ServeConn(context.Background(), hostEnd) }()
	if o.mount.Log == nil {
		o.mount.Log = testLog(t)
	}
	c, err := Mount(guestEnd, s.mnt, o.mount)
	if err != nil {
		srv.Close()
		t.Fatalf("Mount: %v", err)
	}
	s.client = c
	t.Cleanup(func() {
		unmount(t, c)
		if err := srv.Close(); err != nil {
			t.Errorf("server close: %v", err)
		}
		select {
		case err := <-s.served:
			if err != nil && !errors.Is(err, ErrServerClosed) {
				t.Errorf("ServeConn: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("ServeConn did not return")
		}
	})
}

func unmount(t testing.TB, c *Client) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Unmount()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("unmount: %v", err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
