package state

import (
	"errors"
	"fmt"
	"io/fs"
)

// Rename gives the VM with this full ID the name newName. It fails with a
// *NameInUseError if another VM, live or not, has newName, and with an
// error wrapping ErrInvalidName if newName breaks podman's rule. A
// running VM may be renamed: its supervisor never writes the name back.
func (s *Store) Rename(id, newName string) (*Record, error) {
	if !validName(newName) {
		return nil, fmt.Errorf("rename VM: %w %q: use letters, digits, _ . and -, starting with a letter or digit", ErrInvalidName, newName)
	}
	if !isID(id) {
		return nil, fmt.Errorf("rename VM: %w: %s (want a full ID)", ErrNotFound, id)
	}
	// The store lock keeps names from being taken until the record is
	// written; the VM's lock comes second, as in Create and Sweep.
	unlock, err := lockDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("rename VM %s: %w", id, err)
	}
	defer unlock.Unlock()
	recs, _ := s.List()
	for _, o := range recs {
		if o.Name == newName && o.ID != id {
			return nil, &NameInUseError{Name: newName, ID: o.ID}
		}
	}
	vmUnlock, err := lockDir(s.VMDir(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("rename VM: %w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("rename VM %s: %w", id, err)
	}
	defer vmUnlock.Unlock()
	r, err := s.read(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("rename VM: %w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("rename VM %s: %w", id, err)
	}
	r.Name = newName
	if err := writeRecord(s.VMDir(id), r); err != nil {
		return nil, fmt.Errorf("rename VM %s: %w", id, err)
	}
	return r, nil
}
