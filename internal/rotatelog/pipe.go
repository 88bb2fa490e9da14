package rotatelog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// drainGrace bounds how long Drain waits for output still in the pipe, or
// for a descendant of the child that kept the pipe open.
const drainGrace = 2 * time.Second

// Pipe is a pipe whose output is copied into a Writer, for a child
// process (a VMM) to write its console to. W is its write end, an
// *os.File, so os/exec hands it to the child as it is and starts no
// copying goroutine of its own.
type Pipe struct {
	W *os.File

	r    *os.File
	w    *Writer
	fifo string // NewFIFO's path, removed by Drain
	done chan struct{}
	err  error // of the copy; read after done
}

// NewPipe starts copying a new pipe into w, which the Pipe then owns. The
// caller gives p.W to the child and closes it once the child has started.
func NewPipe(w *Writer) (*Pipe, error) {
	r, pw, err := os.Pipe()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("pipe to log %s: %w", w.path, err)
	}
	return startPipe(&Pipe{W: pw, r: r, w: w}), nil
}

// NewFIFO is NewPipe through a named pipe made at path, for a child that
// opens its log by name (Firecracker's PUT /logger) besides writing to W;
// uid and gid own it when uid >= 0 (a jailed child). The copy ends, as
// NewPipe's does, once every writer has closed it; Drain removes it.
func NewFIFO(path string, w *Writer, uid, gid int) (*Pipe, error) {
	// A FIFO left by a crashed run would be opened as it is.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.Close()
		return nil, fmt.Errorf("log fifo %s: %w", path, err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		w.Close()
		return nil, fmt.Errorf("log fifo %s: %w", path, err)
	}
	fail := func(err error) (*Pipe, error) {
		os.Remove(path)
		w.Close()
		return nil, fmt.Errorf("log fifo %s: %w", path, err)
	}
	if uid >= 0 {
		if err := os.Chown(path, uid, gid); err != nil {
			return fail(err)
		}
	}
	// The read end first, non-blocking so that the open does not wait for
	// a writer; then the write end, which finds the reader there.
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fail(err)
	}
	pw, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		r.Close()
		return fail(err)
	}
	return startPipe(&Pipe{W: pw, r: r, w: w, fifo: path}), nil
}

func startPipe(p *Pipe) *Pipe {
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		_, p.err = io.Copy(p.w, p.r)
	}()
	return p
}

// Drain waits until the copy has reached the end of the pipe, which is
// once every write end is closed: call it after the child has exited (and
// after closing W). A pipe still open drainGrace later is closed under the
// copy. Drain then closes the Writer and returns the first failure of
// either; call it once.
func (p *Pipe) Drain() error {
	p.W.Close()
	t := time.NewTimer(drainGrace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.r.Close()
		<-p.done
		p.err = nil // caused by the Close
	}
	p.r.Close()
	if errors.Is(p.err, os.ErrClosed) {
		p.err = nil
	}
	var rmErr error
	if p.fifo != "" {
		if err := os.Remove(p.fifo); err != nil && !errors.Is(err, os.ErrNotExist) {
			rmErr = err
		}
	}
	return errors.Join(p.err, p.w.Close(), rmErr)
}
