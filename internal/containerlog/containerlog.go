// Package containerlog stores a container's output on the host: what
// `fcvm logs` reads, while the VM runs and after it has gone.
//
// The log is a sequence of records, each a 13-byte header (unix nanos u64,
// stream u8, length u32, big-endian) and the bytes as the container wrote
// them, so output is byte-exact and stdout and stderr stay apart. It is
// bounded: when the file passes its limit it is renamed to .1 (replacing
// the previous .1) and a new file begins, so at most twice the limit is
// kept.
//
// One Writer (the VM's supervisor) appends; any number of readers may read
// and follow at the same time.
package containerlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Stream identifies stdout or stderr.
type Stream uint8

// Streams.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

const headerSize = 13

// DefaultLimit is the size at which a log rotates.
const DefaultLimit = 32 << 20

// Record is one write of the container.
type Record struct {
	Time   time.Time
	Stream Stream
	Data   []byte
}

// Writer appends records to a log file.
type Writer struct {
	path  string
	limit int64

	mu   sync.Mutex // guards f and size
	f    *os.File
	size int64
}

// Create opens path for appending, creating it if needed.
func Create(path string, limit int64) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	if limit <= 0 {
		limit = DefaultLimit
	}
	return &Writer{path: path, limit: limit, f: f, size: st.Size()}, nil
}

// Write appends one record.
func (w *Writer) Write(r Record) error {
	b := make([]byte, headerSize+len(r.Data))
	binary.BigEndian.PutUint64(b, uint64(r.Time.UnixNano()))
	b[8] = byte(r.Stream)
	binary.BigEndian.PutUint32(b[9:], uint32(len(r.Data)))
	copy(b[headerSize:], r.Data)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return errors.New("write log: closed")
	}
	if w.size > 0 && w.size+int64(len(b)) > w.limit {
		if err := w.rotateLocked(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	if err != nil {
		return fmt.Errorf("write log %s: %w", w.path, err)
	}
	return nil
}

func (w *Writer) rotateLocked() error {
	w.f.Close()
	w.f = nil
	if err := os.Rename(w.path, w.path+".1"); err != nil {
		return fmt.Errorf("rotate log %s: %w", w.path, err)
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("rotate log %s: %w", w.path, err)
	}
	w.f, w.size = f, 0
	return nil
}

// Close closes the log.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// ReadAll returns every record kept (the rotated file first).
func ReadAll(path string) ([]Record, error) {
	var all []Record
	for _, p := range []string{path + ".1", path} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read log: %w", err)
		}
		recs, _, err := readRecords(f)
		f.Close()
		if err != nil {
			return nil, err
		}
		all = append(all, recs...)
	}
	return all, nil
}

// readRecords reads whole records; a partial record at the end (being
// written) is left for the next read. It returns the offset after the
// last whole record.
func readRecords(r io.Reader) ([]Record, int64, error) {
	var recs []Record
	var off int64
	var hdr [headerSize]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return recs, off, nil
		}
		n := binary.BigEndian.Uint32(hdr[9:])
		if n > 64<<20 {
			return recs, off, fmt.Errorf("read log: corrupt record of %d bytes at %d", n, off)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			return recs, off, nil
		}
		recs = append(recs, Record{
			Time:   time.Unix(0, int64(binary.BigEndian.Uint64(hdr[:]))),
			Stream: Stream(hdr[8]),
			Data:   data,
		})
		off += headerSize + int64(n)
	}
}

// Follow calls fn for every record after the ones in skip (the count
// ReadAll returned), then for new ones as they are written, until done is
// closed or fn returns an error.
func Follow(path string, skip int, done <-chan struct{}, fn func(Record) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("follow log: %w", err)
	}
	defer func() { f.Close() }()
	// Records already delivered live in the current file (those in .1 are
	// older); count how many of skip the current file holds.
	recs, end, err := readRecords(f)
	if err != nil {
		return err
	}
	old := 0
	if all, err := ReadAll(path); err == nil {
		old = len(all) - len(recs)
	}
	for i, r := range recs {
		if old+i >= skip {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	off := end
	// drain delivers the whole records after off in f.
	drain := func() error {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("follow log: %w", err)
		}
		recs, n, err := readRecords(f)
		if err != nil {
			return err
		}
		off += n
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			// Deliver what arrived before done.
		case <-tick.C:
		}
		if err := drain(); err != nil {
			return err
		}
		// A rotation replaced the file: finish the old one (the writer
		// closed it before renaming, so nothing more comes), then
		// follow the new one.
		if cur, err := os.Stat(path); err == nil {
			if fst, err := f.Stat(); err == nil && !os.SameFile(cur, fst) {
				if err := drain(); err != nil {
					return err
				}
				f.Close()
				if f, err = os.Open(path); err != nil {
					return fmt.Errorf("follow log: %w", err)
				}
				off = 0
				if err := drain(); err != nil {
					return err
				}
			}
		}
		select {
		case <-done:
			return nil
		default:
		}
	}
}
