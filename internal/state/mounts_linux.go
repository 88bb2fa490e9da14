package state

import (
	"fmt"
	"path/filepath"
)

// mountedUnder lists what this process's mount namespace has mounted at or
// below dir.
func mountedUnder(dir string) ([]string, error) {
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	info, err := readFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	return mountsUnder(info, resolved), nil
}
