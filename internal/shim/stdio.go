package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/containerd/fifo"
)

// fifoOpenTimeout bounds the wait for containerd's side of a FIFO: a
// client that never opens it must not hang Create or Start.
const fifoOpenTimeout = 30 * time.Second

// pipes are the FIFOs containerd hands a process for its stdio. Every
// FIFO given is opened and closed, even one fcvm has nothing to write to:
// a client waits for the close to finish its copy (crictl exec hangs
// otherwise).
type pipes struct {
	stdin          io.ReadCloser
	stdout, stderr io.WriteCloser
}

// openPipes opens the FIFOs at the paths given; an empty path is none.
func openPipes(ctx context.Context, stdin, stdout, stderr string) (_ *pipes, err error) {
	// The FIFO package watches ctx until each open completes, and the
	// stdin reader's open completes after OpenFifo returns (when the
	// client opens its end): ctx must not end with this function, only
	// when the bound passes.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	time.AfterFunc(fifoOpenTimeout, cancel)
	p := &pipes{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if stdin != "" {
		if p.stdin, err = fifo.OpenFifo(ctx, stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
			return nil, fmt.Errorf("open stdin %s: %w", stdin, err)
		}
	}
	if stdout != "" {
		if p.stdout, err = fifo.OpenFifo(ctx, stdout, syscall.O_WRONLY, 0); err != nil {
			return nil, fmt.Errorf("open stdout %s: %w", stdout, err)
		}
	}
	if stderr != "" {
		if p.stderr, err = fifo.OpenFifo(ctx, stderr, syscall.O_WRONLY, 0); err != nil {
			return nil, fmt.Errorf("open stderr %s: %w", stderr, err)
		}
	}
	return p, nil
}

// in is stdin as the engine reads it, nil when there is none.
func (p *pipes) in() io.Reader {
	if p.stdin == nil {
		return nil
	}
	return p.stdin
}

// out and errw are where output goes; output for a FIFO not given is
// dropped.
func (p *pipes) out() io.Writer { return writerOr(p.stdout) }
func (p *pipes) errw() io.Writer {
	return writerOr(p.stderr)
}

func writerOr(w io.WriteCloser) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// stdinDrain is how long CloseIO leaves the stdin FIFO open: the client
// calls it once its input ended, and what it wrote before may still be in
// the FIFO. A client that closed its end makes the reader see end of file
// at once; the drain only bounds one that keeps its end open.
const stdinDrain = 5 * time.Second

// closeStdin ends the process's input (CloseIO): the guest sees end of
// file once what the client wrote is read. The shim keeps no write end of
// its own (the runc shim does, and ctr then hangs: it calls CloseIO only
// if its input ends after Create returned, and a VM's Create is long).
func (p *pipes) closeStdin() {
	if p.stdin != nil {
		time.AfterFunc(stdinDrain, func() { p.stdin.Close() })
	}
}

// Close closes every FIFO.
func (p *pipes) Close() error {
	var errs []error
	for _, c := range []io.Closer{p.stdin, p.stdout, p.stderr} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
