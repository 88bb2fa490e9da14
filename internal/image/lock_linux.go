package image

import (
	"context"

	"github.com/fcvm/fcvm/internal/flock"
)

// fileLock is an exclusive lock on a file that its holder may remove when
// done (package flock sees to it that a waiter never holds a removed file).
type fileLock struct{ l *flock.Lock }

// lockFile waits for the lock at path until ctx is done.
func lockFile(ctx context.Context, path string) (*fileLock, error) {
	l, err := flock.Acquire(ctx, path, nil)
	if err != nil {
		return nil, err
	}
	return &fileLock{l}, nil
}

// tryLockFile takes the lock at path if nobody holds it.
func tryLockFile(path string) (*fileLock, bool, error) {
	l, ok, err := flock.Try(path)
	if !ok {
		return nil, ok, err
	}
	return &fileLock{l}, true, nil
}

// unlock releases the lock, first removing the file if remove is set.
func (l *fileLock) unlock(remove bool) {
	if remove {
		l.l.Remove()
		return
	}
	l.l.Unlock()
}
