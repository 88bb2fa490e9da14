package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fileLock is an exclusive flock on a file that its holder may remove when
// done. Taking it checks that the locked file is still the one at the path,
// so a waiter that locked a file just removed by the previous holder tries
// again instead of believing it holds the lock.
type fileLock struct {
	f    *os.File
	path string
}

// lockFile waits for the lock at path until ctx is done.
func lockFile(ctx context.Context, path string) (*fileLock, error) {
	for {
		l, ok, err := tryLockFile(path)
		if err != nil || ok {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tryLockFile takes the lock at path if nobody holds it.
func tryLockFile(path string) (*fileLock, bool, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("lock %s: %w", path, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, false, nil
		}
		if err != nil {
			f.Close()
			return nil, false, fmt.Errorf("lock %s: %w", path, err)
		}
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("lock %s: %w", path, err)
		}
		if err := unix.Stat(path, &now); err == nil && now.Ino == held.Ino && now.Dev == held.Dev {
			return &fileLock{f: f, path: path}, true, nil
		}
		f.Close() // removed by the previous holder: lock the new file
	}
}

// unlock releases the lock, first removing the file if remove is set.
func (l *fileLock) unlock(remove bool) {
	if remove {
		os.Remove(l.path)
	}
	l.f.Close()
}
