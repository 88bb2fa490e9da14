//go:build unix

package state

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockDir opens dir and takes an exclusive flock on it, waiting for any
// holder. Closing the returned file releases the lock; so does the death of
// the process.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}
