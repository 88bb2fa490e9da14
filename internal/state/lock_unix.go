//go:build unix

package state

import (
	"context"

	"github.com/fcvm/fcvm/internal/flock"
)

// lockDir takes an exclusive lock on dir, waiting for any holder. It is
// released by Unlock, or by the death of the process.
func lockDir(dir string) (*flock.Lock, error) {
	return flock.AcquireDir(context.Background(), dir)
}
