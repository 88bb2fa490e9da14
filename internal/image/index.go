package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fcvm/fcvm/internal/atomicfile"
)

// refIndex maps canonical names to image IDs. It lives in refs.json,
// replaced whole (temp file, fsync, rename) under the store lock, so a
// reader without the lock sees the old or the new index, never half of one.
type refIndex struct {
	Version int               `json:"version"`
	Refs    map[string]string `json:"refs"`
}

func (s *Store) indexPath() string { return filepath.Join(s.dir, "refs.json") }

func (s *Store) readIndex() (*refIndex, error) {
	idx := &refIndex{Version: 1, Refs: map[string]string{}}
	b, err := os.ReadFile(s.indexPath())
	if errors.Is(err, fs.ErrNotExist) {
		return idx, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read image index: %w", err)
	}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("read image index %s: %w (remove it and pull again)", s.indexPath(), err)
	}
	if idx.Refs == nil {
		idx.Refs = map[string]string{}
	}
	return idx, nil
}

// writeIndexLocked replaces refs.json; the caller holds the store lock.
func (s *Store) writeIndexLocked(idx *refIndex) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.indexPath(), append(b, '\n'), 0o644)
}
