package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	return writeFileAtomic(s.indexPath(), append(b, '\n'))
}

// writeFileAtomic writes data to a temp file beside path, syncs it, renames
// it over path and syncs the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
