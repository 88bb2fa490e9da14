// Package rotatelog keeps logs whose volume someone else controls, such as
// a guest's serial console or a supervisor's log of what its guest did, to
// a bounded size on disk.
//
// A Writer appends to one file. When the next write would take the file
// past the limit, the file is renamed to path.1 (replacing the previous
// one) and a new file begins, so at most twice the limit is kept and the
// newest output is never the part that is lost. Tail reads the last bytes
// of such a log, across the rotation, without reading the rest.
//
// A child process writes into a Writer through a Pipe: the VMMs' serial
// consoles go to their stdout, a Pipe's write end, rather than straight
// to a file that would grow without bound. A child that opens its log by
// name (Firecracker's logger) is given NewFIFO's named pipe instead.
//
// # Errors
//
// A Writer is fed by processes that must not stall on it (a VMM writing
// its serial console, a logger): once a write or a rotation fails (the
// disk is full, the directory is gone), Write drops what it is given and
// still reports success, and Close returns the first failure.
//
// # Concurrency
//
// A Writer's methods may be called from many goroutines; each Write lands
// whole in one file. One Writer per path: two would rotate each other's
// files away.
package rotatelog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultLimit is the size at which a log rotates unless told otherwise:
// enough for a kernel's boot messages many times over.
const DefaultLimit = 8 << 20

// Writer appends to a size-capped log file.
type Writer struct {
	path  string
	limit int64

	mu     sync.Mutex // guards the fields below
	f      *os.File
	size   int64
	mirror int   // fd kept a duplicate of f, or -1
	err    error // the first failure; writes are dropped from then on
}

// Create opens path for appending, creating it with mode 0640 if needed.
// limit <= 0 means DefaultLimit. An existing file's size counts towards
// the limit.
func Create(path string, limit int64) (*Writer, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	f, size, err := open(path)
	if err != nil {
		return nil, err
	}
	return &Writer{path: path, limit: limit, f: f, size: size, mirror: -1}, nil
}

func open(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, 0, fmt.Errorf("open log %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open log %s: %w", path, err)
	}
	return f, st.Size(), nil
}

// Write appends p, first rotating the file if p would take it past the
// limit. Of a p larger than the limit, only the last limit bytes are
// kept. Write reports success even when it drops p (see Errors).
func (w *Writer) Write(p []byte) (int, error) {
	n := len(p)
	if int64(n) > w.limit {
		p = p[int64(n)-w.limit:]
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil || w.f == nil {
		return n, nil
	}
	if w.size > 0 && w.size+int64(len(p)) > w.limit {
		if err := w.rotateLocked(); err != nil {
			w.err = err
			return n, nil
		}
	}
	m, err := w.f.Write(p)
	w.size += int64(m)
	if err != nil {
		w.err = fmt.Errorf("write log %s: %w", w.path, err)
	}
	return n, nil
}

// rotateLocked moves the file to path.1 and starts a new one.
func (w *Writer) rotateLocked() error {
	if err := os.Rename(w.path, w.path+".1"); err != nil {
		return fmt.Errorf("rotate log %s: %w", w.path, err)
	}
	f, size, err := open(w.path)
	if err != nil {
		return fmt.Errorf("rotate log %s: %w", w.path, err)
	}
	w.f.Close()
	w.f, w.size = f, size
	if w.mirror >= 0 {
		if err := unix.Dup3(int(f.Fd()), w.mirror, 0); err != nil {
			return fmt.Errorf("rotate log %s: mirror onto fd %d: %w", w.path, w.mirror, err)
		}
	}
	return nil
}

// Mirror makes fd a duplicate of the current file, now and after every
// rotation, for output that bypasses the Writer: the Go runtime writes a
// crash report to fd 2. What is written to fd directly does not count
// towards the limit, so it must be small and rare.
func (w *Writer) Mirror(fd int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("mirror log %s: %w", w.path, os.ErrClosed)
	}
	if err := unix.Dup3(int(w.f.Fd()), fd, 0); err != nil {
		return fmt.Errorf("mirror log %s onto fd %d: %w", w.path, fd, err)
	}
	w.mirror = fd
	return nil
}

// Close closes the file and returns the first failure of the Writer's
// life, if any. Later writes are dropped; Close may be called again.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return w.err
	}
	err := w.f.Close()
	w.f = nil
	if w.err == nil && err != nil {
		w.err = fmt.Errorf("close log %s: %w", w.path, err)
	}
	return w.err
}

// Tail returns the last n bytes of the log at path, taking the start from
// path.1 when the current file is shorter; it reads no more than that. A
// log that does not exist is empty.
func Tail(path string, n int64) ([]byte, error) {
	cur, err := tailFile(path, n)
	if err != nil {
		return nil, err
	}
	if int64(len(cur)) >= n {
		return cur, nil
	}
	old, err := tailFile(path+".1", n-int64(len(cur)))
	if err != nil {
		return nil, err
	}
	return append(old, cur...), nil
}

// tailFile reads the last n bytes of one file.
func tailFile(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read log %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read log %s: %w", path, err)
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	m, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read log %s: %w", path, err)
	}
	return b[:m], nil
}
