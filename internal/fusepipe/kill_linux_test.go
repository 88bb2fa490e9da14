package fusepipe

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// remoteShare is a mount served by a helper process, so the test can kill
// or freeze the server.
func remoteShare(t *testing.T, opts MountOptions) (h *helper, dir, mnt string, c *Client) {
	return remoteShareAs(t, opts, nil)
}

// remoteShareAs is remoteShare with the server running as cred, on a
// directory cred's user owns.
func remoteShareAs(t *testing.T, opts MountOptions, cred *syscall.Credential) (h *helper, dir, mnt string, c *Client) {
	base := t.TempDir()
	dir, mnt = filepath.Join(base, "host"), filepath.Join(base, "mnt")
	check(t, os.Mkdir(dir, 0o755))
	check(t, os.Mkdir(mnt, 0o755))
	if cred != nil {
		for d := base; d != os.TempDir(); d = filepath.Dir(d) {
			check(t, os.Chmod(d, 0o755))
		}
		check(t, os.Chown(base, int(cred.Uid), int(cred.Gid)))
		check(t, os.Chown(dir, int(cred.Uid), int(cred.Gid)))
	}
	h = startHelper(t, "server", dir, cred)
	if got := h.line(t); got != "ready" {
		t.Fatalf("server helper: %s", got)
	}
	conn, err := net.Dial("unix", dir+".sock")
	check(t, err)
	opts.Log = testLog(t)
	c, err = Mount(conn, mnt, opts)
	check(t, err)
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		unmount(t, c)
	})
	return h, dir, mnt, c
}

// within runs f and fails unless it returns within d.
func within(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f() }()
	select {
	case err := <-done:
		t.Logf("%s: %v after %v", what, err, time.Since(start).Round(time.Millisecond))
		return err
	case <-time.After(d):
		t.Fatalf("%s: still running after %v", what, d)
	}
	return nil
}

func TestServerKilledMidOperation(t *testing.T) {
	h, dir, mnt, c := remoteShare(t, MountOptions{})
	check(t, os.WriteFile(filepath.Join(mnt, "f"), []byte("data"), 0o644))

	// A lock held on the host keeps the guest's F_SETLKW in flight on
	// the server when it dies.
	hf, err := os.OpenFile(filepath.Join(dir, "f"), os.O_RDWR, 0)
	check(t, err)
	defer hf.Close()
	check(t, unix.FcntlFlock(hf.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}))
	f, err := os.OpenFile(filepath.Join(mnt, "f"), os.O_RDWR, 0)
	check(t, err)
	waiting := make(chan error, 1)
	go func() { waiting <- unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &unix.Flock_t{Type: unix.F_WRLCK}) }()
	time.Sleep(100 * time.Millisecond)

	check(t, h.cmd.Process.Kill())
	killed := time.Now()
	select {
	case err := <-waiting:
		mustErrno(t, err, syscall.EIO)
		t.Logf("in-flight F_SETLKW: %v after %v", err, time.Since(killed).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight F_SETLKW still blocked 5s after the server died")
	}
	if time.Since(killed) > 3*time.Second {
		t.Errorf("EIO took %v", time.Since(killed))
	}
	err = within(t, 3*time.Second, "read after death", func() error {
		_, err := f.ReadAt(make([]byte, 4), 0)
		return err
	})
	mustErrno(t, err, syscall.EIO)
	err = within(t, 3*time.Second, "stat of a new name after death", func() error {
		_, err := os.Stat(filepath.Join(mnt, "never-seen"))
		return err
	})
	mustErrno(t, err, syscall.EIO)
	err = within(t, 3*time.Second, "create after death", func() error {
		return os.WriteFile(filepath.Join(mnt, "g"), nil, 0o644)
	})
	mustErrno(t, err, syscall.EIO)
	f.Close()
	if !errors.Is(c.Err(), ErrHostGone) && c.Err() == nil {
		t.Errorf("Err() = %v", c.Err())
	}
	within(t, 5*time.Second, "unmount", c.Unmount)
}

func TestServerFrozen(t *testing.T) {
	h, _, mnt, c := remoteShare(t, MountOptions{Timeout: time.Second, AttrTimeout: -1, EntryTimeout: -1})
	check(t, os.WriteFile(filepath.Join(mnt, "f"), []byte("data"), 0o644))
	check(t, h.cmd.Process.Signal(syscall.SIGSTOP))
	defer h.cmd.Process.Signal(syscall.SIGCONT)
	err := within(t, 4*time.Second, "stat on a frozen server", func() error {
		_, err := os.Stat(filepath.Join(mnt, "f"))
		return err
	})
	mustErrno(t, err, syscall.EIO)
	if !errors.Is(c.Err(), ErrHostGone) {
		t.Errorf("Err() = %v, want ErrHostGone", c.Err())
	}
	within(t, 5*time.Second, "unmount", c.Unmount)
}
