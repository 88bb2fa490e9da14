//go:build unix

package flock

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestExclusive: many goroutines (each lock is its own open file
// description, as between processes) never hold the lock at once.
func TestExclusive(t *testing.T) {
	for _, target := range []string{"file", "dir"} {
		t.Run(target, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lock")
			if target == "dir" {
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var inside, max atomic.Int32
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := context.Background()
					if i%2 == 1 {
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeout(ctx, time.Minute) // the polling path
						defer cancel()
					}
					l, err := Acquire(ctx, path, nil)
					if err != nil {
						t.Error(err)
						return
					}
					if n := inside.Add(1); n > max.Load() {
						max.Store(n)
					}
					time.Sleep(2 * time.Millisecond)
					inside.Add(-1)
					if i%3 == 0 && target == "file" {
						l.Remove()
					} else {
						l.Unlock()
					}
				}()
			}
			wg.Wait()
			if max.Load() != 1 {
				t.Errorf("%d holders at once", max.Load())
			}
		})
	}
}

// TestWaitingAndCancel: a waiter hears once that it waits, and gives up
// when its context ends.
func TestWaitingAndCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	held, err := Acquire(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	told := 0
	if _, err := Acquire(ctx, path, func() { told++ }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire of a held lock: %v, want the deadline", err)
	}
	if told != 1 {
		t.Errorf("waiting called %d times, want 1", told)
	}
}

// TestHeldByAnotherProcess: a lock held by another process blocks, and its
// death frees it.
func TestHeldByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	cmd := exec.Command("flock", path, "sh", "-c", "echo locked; exec sleep 30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1) from util-linux: %v", err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || !strings.HasPrefix(string(buf), "locked") {
		t.Fatalf("flock(1) did not lock: %q %v", buf, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if _, err := Acquire(ctx, path, nil); err == nil {
		t.Error("locked a file another process holds")
	}
	cancel()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // flock(1) and the sleep holding its fd
	cmd.Wait()
	l, err := Acquire(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	l.Unlock()
}

// TestAcquireDir: a directory that does not exist is not created.
func TestAcquireDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vm")
	if _, err := AcquireDir(context.Background(), dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("AcquireDir of a missing dir: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("AcquireDir made %s", dir)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := AcquireDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock()
}
