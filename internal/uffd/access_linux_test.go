package uffd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcvm/fcvm/internal/uffd/uffdtest"
)

// nobody is the uid and gid of the other local user in these tests.
const nobody = 65534

// smallRegions is one 4 KiB-page region at the start of the memory file:
// no huge pages, so a client that is not root can map it.
var smallRegions = []uffdtest.RegionSpec{{Size: 256 << 10, Offset: 0, PageSize: PageSize4K}}

// TestSocketMode checks that the socket is 0600 and owned by the server's
// user whatever the umask, and that nothing of its making is left beside
// it.
func TestSocketMode(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	mem := writeMemFile(t, dir, 1<<20)
	sock := filepath.Join(dir, "s.sock")
	old := syscall.Umask(0)
	srv, err := NewServer(Options{MemFile: mem, Socket: sock})
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
		t.Errorf("socket owned by uid %d, want %d", uid, os.Geteuid())
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "mem s.sock" {
		t.Errorf("directory holds %q, want the memory file and the socket", names)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

// TestServeRefusesOtherUID has a client of another user (uid 65534) send
// a valid handshake with a working userfaultfd. With the socket as the
// server makes it, the client cannot connect; with the socket made
// world-writable (as a umask of 0 used to), it connects and is refused
// before the server reads anything, so none of the snapshot reaches it.
// A client of the server's own user is then served.
func TestServeRefusesOtherUID(t *testing.T) {
	requireRoot(t)
	// The other user may reach the socket's directory and run the
	// helper, but not read the memory file (0600). (t.TempDir's parent
	// is private.)
	dir, err := os.MkdirTemp("", "uffd-uid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Options{MemFile: writeMemFile(t, dir, 1<<20)})
	exe := copyExecutable(t, dir)
	job := uffdtest.Job{Socket: ts.SocketPath(), Regions: smallRegions}

	h := startHelperAs(t, exe, job, nobody)
	_, err = h.Wait(30 * time.Second)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("client of uid %d on the 0600 socket: %v, want permission denied", nobody, err)
	}

	if err := os.Chmod(ts.SocketPath(), 0o666); err != nil {
		t.Fatal(err)
	}
	h = startHelperAs(t, exe, job, nobody)
	pid := fmt.Sprintf("pid=%d", h.Cmd.Process.Pid)
	ts.log.waitFor(t, "refused client", pid, fmt.Sprintf("uid %d", nobody))
	if strings.Contains(ts.log.String(), "client connected") {
		t.Errorf("a client of uid %d was served:\n%s", nobody, ts.log.String())
	}
	// Unserved, it waits on its first page until killed.
	h.Cmd.Process.Kill()
	h.Wait(30 * time.Second)

	job.MemFile, job.Verify = ts.opts.MemFile, true
	if res := runHelper(t, job); res.Pages != int(smallRegions[0].Size/PageSize4K) {
		t.Errorf("client of the server's uid touched %d pages, want %d", res.Pages, smallRegions[0].Size/PageSize4K)
	}
}

func TestPeerAllowed(t *testing.T) {
	for _, tc := range []struct {
		uid, euid int
		want      bool
	}{
		{0, 0, true},
		{1000, 1000, true},
		{0, 1000, true},
		{nobody, 1000, false},
		{1000, 0, false},
		{nobody, 0, false},
	} {
		if got := peerAllowed(tc.uid, tc.euid); got != tc.want {
			t.Errorf("peerAllowed(uid %d, server %d) = %v, want %v", tc.uid, tc.euid, got, tc.want)
		}
	}
}

// TestSignalClients: a client being served gets the signal through the
// server's pidfd of it.
func TestSignalClients(t *testing.T) {
	requireRoot(t)
	ts := startServer(t, Options{})
	h := startHelper(t, uffdtest.Job{Socket: ts.SocketPath(), Regions: smallRegions, StallAfter: 1})
	if err := h.WaitLine("stalled", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := ts.SignalClients(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := h.Cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("client ended with %v, want death by SIGTERM", err)
	}
	ts.log.waitFor(t, "client gone", fmt.Sprintf("pid=%d", h.Cmd.Process.Pid), "client exited")
	if err := ts.SignalClients(syscall.SIGTERM); err != nil {
		t.Errorf("SignalClients with no clients: %v", err)
	}
}

// copyExecutable copies the test binary into dir, mode 0755, so that
// another user may run it (go test builds it in a private directory).
func copyExecutable(t *testing.T, dir string) string {
	t.Helper()
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, "helper.test")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// startHelperAs starts a helper running as uid (and the same gid).
func startHelperAs(t *testing.T, exe string, job uffdtest.Job, uid uint32) *uffdtest.Helper {
	t.Helper()
	h, err := uffdtest.NewHelper(exe, job, "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	h.Cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	h.Cmd.Dir = "/"
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Cmd.Process.Kill(); h.Wait(time.Second) })
	return h
}

// TestSocketLongPath: a socket path near the 107-byte limit works, though
// the temporary name the socket is first bound to is longer.
func TestSocketLongPath(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	mem := writeMemFile(t, base, 1<<20)
	// A long directory and a short name: the temporary directory's
	// name is longer than the socket's.
	dir := filepath.Join(base, strings.Repeat("d", 96-len(base)))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	srv, err := NewServer(Options{MemFile: mem, Socket: sock})
	if err != nil {
		t.Fatalf("%d-byte socket path: %v", len(sock), err)
	}
	defer srv.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
