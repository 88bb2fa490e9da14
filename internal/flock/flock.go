//go:build unix

// Package flock is fcvm's one way to take an exclusive lock on a path
// between processes: flock(2) on the file or directory, released when the
// holder unlocks, closes, or dies, so a crashed process never blocks the
// next.
//
// A holder may remove the lock file when it is done (Lock.Remove); a
// waiter that then locks the removed file notices that the path now names
// another file, and locks that one instead, so two processes never both
// believe they hold the lock.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Lock is a held lock.
type Lock struct {
	f    *os.File
	path string
}

// pollInterval is how often a waiter that can be cancelled tries again.
const pollInterval = 20 * time.Millisecond

// Acquire takes the exclusive lock on path, creating it as an empty file
// if it does not exist (a directory is locked as it is). If another
// process holds it, waiting (when non-nil) is called once and Acquire
// waits until the lock is free or ctx ends; with a ctx that cannot end it
// sleeps in the kernel rather than polling.
func Acquire(ctx context.Context, path string, waiting func()) (*Lock, error) {
	return acquire(ctx, path, true, waiting)
}

// AcquireDir takes the exclusive lock on the directory dir, which must
// exist (the error wraps fs.ErrNotExist when it does not), waiting as
// Acquire does.
func AcquireDir(ctx context.Context, dir string) (*Lock, error) {
	return acquire(ctx, dir, false, nil)
}

func acquire(ctx context.Context, path string, create bool, waiting func()) (*Lock, error) {
	for told := false; ; {
		l, busy, err := try(path, create)
		if err != nil || !busy {
			return l, err
		}
		if !told && waiting != nil {
			waiting()
			told = true
		}
		if ctx.Done() == nil {
			// Nothing can cancel this wait: block in flock(2).
			l, err := acquireBlocking(path, create)
			if l != nil || err != nil {
				return l, err
			}
			continue // the file was replaced meanwhile
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// open opens path for locking: a directory read-only, anything else
// read-write, created if missing when create is set.
func open(path string, create bool) (*os.File, error) {
	var f *os.File
	var err error
	if create {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	}
	if !create || errors.Is(err, unix.EISDIR) {
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// Try takes the lock on path if nobody holds it; ok false (and no error)
// means somebody does.
func Try(path string) (l *Lock, ok bool, err error) {
	l, busy, err := try(path, true)
	return l, !busy && err == nil, err
}

// try takes the lock if nobody holds it; busy reports that somebody does.
func try(path string, create bool) (_ *Lock, busy bool, _ error) {
	for {
		f, err := open(path, create)
		if err != nil {
			return nil, false, err
		}
		err = flock(f, unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, true, nil
		}
		if err != nil {
			f.Close()
			return nil, false, fmt.Errorf("lock %s: %w", path, err)
		}
		if same, err := stillAt(f, path); err != nil || same {
			if err != nil {
				f.Close()
				return nil, false, err
			}
			return &Lock{f: f, path: path}, false, nil
		}
		f.Close() // removed by the previous holder: lock the new file
	}
}

// acquireBlocking waits in flock(2); it returns nil, nil when the file it
// locked had been replaced by then.
func acquireBlocking(path string, create bool) (*Lock, error) {
	f, err := open(path, create)
	if err != nil {
		return nil, err
	}
	if err := flock(f, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	same, err := stillAt(f, path)
	if err != nil || !same {
		f.Close()
		return nil, err
	}
	return &Lock{f: f, path: path}, nil
}

// flock is flock(2), retried when a signal interrupts it.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// stillAt reports whether path still names the file f has open.
func stillAt(f *os.File, path string) (bool, error) {
	var held, now unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &held); err != nil {
		return false, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Stat(path, &now); err != nil {
		return false, nil // gone: the caller opens it again, and learns that
	}
	return now.Ino == held.Ino && now.Dev == held.Dev, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() { l.f.Close() }

// Remove removes the lock file and then releases the lock, for a holder
// whose lock file should not outlive it.
func (l *Lock) Remove() {
	os.Remove(l.path)
	l.f.Close()
}
