package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/fusepipe"
)

// These tests run the agent's volume handling on the host with real FUSE
// mounts: a channel session over a socket pair stands in for the VM's
// carrier, and the host end serves a temporary directory with fuse-pipe
// as the supervisor does.

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestAgent returns an agent whose volumes mount under a temporary
// directory, unmounted when the test ends.
func newTestAgent(t *testing.T) *Agent {
	if os.Geteuid() != 0 {
		t.Fatal("volume tests mount FUSE file systems: run them as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("volume tests need /dev/fuse: %v (modprobe fuse)", err)
	}
	a := &Agent{log: testLog(t)}
	a.vols.root = t.TempDir()
	t.Cleanup(func() {
		a.vols.mu.Lock()
		defer a.vols.mu.Unlock()
		for i, gv := range a.vols.m {
			if gv.client != nil {
				if err := gv.client.Unmount(); err != nil {
					t.Errorf("unmount volume %d: %v", i, err)
				}
			}
		}
	})
	return a
}

// session connects a host client to a's handler, as one channel session.
// Closing the client resets the channel.
func session(t *testing.T, a *Agent) *channel.Client {
	t.Helper()
	host, guest := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, r, err := channel.GuestHandshake(guest, 0)
		if err != nil {
			guest.Close()
			return
		}
		channel.Serve(ctx, guest, r, a.log, a.handle)
	}()
	c, err := channel.NewClient(host, 1, a.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
		<-done
	})
	return c
}

func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

// shareDir opens volume i on c and serves dir on it, as the supervisor
// does. It returns the guest's refusal, if any.
func shareDir(t *testing.T, c *channel.Client, i int, dir string, ro bool) error {
	t.Helper()
	srv, err := fusepipe.NewServer(dir, fusepipe.ServerOptions{ReadOnly: ro, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := c.Open(context.Background(), channel.Request{Kind: channel.KindVolume, Volume: i})
	if err != nil {
		srv.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(context.Background(), s)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return nil
}

func hostDir(t *testing.T, file, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestVolumesMountBeforeStart(t *testing.T) {
	a := newTestAgent(t)
	c := session(t, a)
	d0 := hostDir(t, "a", "zero\n")
	d1 := hostDir(t, "b", "one\n")
	if err := shareDir(t, c, 0, d0, false); err != nil {
		t.Fatal(err)
	}
	if err := shareDir(t, c, 1, d1, true); err != nil {
		t.Fatal(err)
	}
	plan := []channel.VolumePlan{{Guest: "/a"}, {Guest: "/b", ReadOnly: true}}
	if err := a.mountVolumes(plan); err != nil {
		t.Fatalf("mountVolumes: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(a.vols.dir(0), "a")); err != nil || string(b) != "zero\n" {
		t.Errorf("read through volume 0: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(a.vols.dir(0), "new"), []byte("x"), 0o644); err != nil {
		t.Errorf("write through volume 0: %v", err)
	} else if b, err := os.ReadFile(filepath.Join(d0, "new")); err != nil || string(b) != "x" {
		t.Errorf("host reads what the guest wrote: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(a.vols.dir(1), "b")); err != nil || string(b) != "one\n" {
		t.Errorf("read through volume 1: %q, %v", b, err)
	}
	err := os.WriteFile(filepath.Join(a.vols.dir(1), "new"), []byte("x"), 0o644)
	if !errors.Is(err, errROFS) {
		t.Errorf("write through the read-only volume: %v, want EROFS", err)
	}
}

// TestVolumeResetBeforeStart: a channel reset before the container starts
// replaces the dead mount with the new session's.
func TestVolumeResetBeforeStart(t *testing.T) {
	a := newTestAgent(t)
	dir := hostDir(t, "f", "data\n")
	c1 := session(t, a)
	if err := shareDir(t, c1, 0, dir, false); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	c2 := session(t, a)
	if err := shareDir(t, c2, 0, dir, false); err != nil {
		t.Fatalf("second session's volume: %v", err)
	}
	if err := a.mountVolumes([]channel.VolumePlan{{Guest: "/data"}}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(a.vols.dir(0), "f")); err != nil || string(b) != "data\n" {
		t.Errorf("read after the reset: %q, %v", b, err)
	}
}

// TestVolumeResetAfterStart: once the container uses a volume, a new
// stream for it is refused with an error that says volumes do not survive
// a reset, and the old mount fails with EIO rather than hanging.
func TestVolumeResetAfterStart(t *testing.T) {
	a := newTestAgent(t)
	dir := hostDir(t, "f", "data\n")
	c1 := session(t, a)
	if err := shareDir(t, c1, 0, dir, false); err != nil {
		t.Fatal(err)
	}
	if err := a.mountVolumes([]channel.VolumePlan{{Guest: "/data"}}); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	c2 := session(t, a)
	err := shareDir(t, c2, 0, dir, false)
	var ge *channel.GuestError
	if !errors.As(err, &ge) || !strings.Contains(ge.Msg, "do not survive a channel reset") {
		t.Errorf("new stream for a volume in use: %v, want a refusal saying volumes do not survive a reset", err)
	}
	start := time.Now()
	_, err = os.ReadFile(filepath.Join(a.vols.dir(0), "other"))
	if !errors.Is(err, errEIO) {
		t.Errorf("read through the dead mount: %v, want EIO", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("dead mount took %s to fail", d)
	}
}

func TestVolumeWaitErrors(t *testing.T) {
	a := newTestAgent(t)
	c := session(t, a)
	if err := shareDir(t, c, 0, t.TempDir(), false); err != nil {
		t.Fatal(err)
	}
	err := a.vols.wait([]channel.VolumePlan{{Guest: "/a"}, {Guest: "/b"}}, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "volume /b: not mounted within") {
		t.Errorf("wait for a volume the host never shared: %v", err)
	}

	// A mount point that cannot be made fails start at once with the
	// guest's reason.
	b := newTestAgent(t)
	root := filepath.Join(t.TempDir(), "file")
	os.WriteFile(root, nil, 0o644)
	b.vols.root = root
	cb := session(t, b)
	if err := shareDir(t, cb, 0, t.TempDir(), false); err == nil {
		t.Error("volume under a file accepted")
	}
	start := time.Now()
	err = b.vols.wait([]channel.VolumePlan{{Guest: "/a"}}, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "volume /a: make mount point") {
		t.Errorf("wait after a failed mount: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("wait after a failed mount took %s", time.Since(start))
	}

	if err := shareDir(t, c, maxVolumes, t.TempDir(), false); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("volume index %d: %v", maxVolumes, err)
	}
}

var (
	errROFS = syscall.EROFS
	errEIO  = syscall.EIO
)
