package uffd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// A working-set file lists the memory-file pages one client touched, in
// the order it first touched them: a magic line, then (offset, length)
// pairs of little-endian uint64s. Adjacent pages are merged into one
// extent when written.
const wsMagic = "FCVMWS1\n"

// extent is a byte range of the memory file.
type extent struct{ off, len uint64 }

func encodeWorkingSet(pages []extent) []byte {
	var merged []extent
	for _, p := range pages {
		if n := len(merged); n > 0 && merged[n-1].off+merged[n-1].len == p.off {
			merged[n-1].len += p.len
			continue
		}
		merged = append(merged, p)
	}
	b := make([]byte, 0, len(wsMagic)+16*len(merged))
	b = append(b, wsMagic...)
	for _, e := range merged {
		b = binary.LittleEndian.AppendUint64(b, e.off)
		b = binary.LittleEndian.AppendUint64(b, e.len)
	}
	return b
}

// decodeWorkingSet parses a working-set file and drops extents that are
// not inside a memory file of memSize bytes: a stale file must not make
// the server copy garbage, only prefetch less.
func decodeWorkingSet(b []byte, memSize uint64) ([]extent, error) {
	if !bytes.HasPrefix(b, []byte(wsMagic)) {
		return nil, errors.New("not a working-set file")
	}
	b = b[len(wsMagic):]
	if len(b)%16 != 0 {
		return nil, fmt.Errorf("truncated working-set file: %d trailing bytes", len(b)%16)
	}
	out := make([]extent, 0, len(b)/16)
	for ; len(b) > 0; b = b[16:] {
		e := extent{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])}
		if e.len == 0 || e.off+e.len < e.off || e.off+e.len > memSize {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

func readWorkingSet(path string, memSize uint64) ([]extent, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ws, err := decodeWorkingSet(b, memSize)
	if err != nil {
		return nil, fmt.Errorf("read working set %s: %w", path, err)
	}
	return ws, nil
}

// writeWorkingSet replaces path atomically, so a server reading it never
// sees half a file.
func writeWorkingSet(path string, pages []extent) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write working set %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("write working set %s: %w", path, err)
		}
	}()
	if _, err = f.Write(encodeWorkingSet(pages)); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
