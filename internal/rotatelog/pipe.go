package rotatelog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
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
	p := &Pipe{W: pw, r: r, w: w, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		_, p.err = io.Copy(w, r)
	}()
	return p, nil
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
	return errors.Join(p.err, p.w.Close())
}
