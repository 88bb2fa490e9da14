package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/containerlog"
	"github.com/fcvm/fcvm/internal/rotatelog"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/termsafe"
)

// Stdio is where a foreground run's streams go; nil fields are not used.
type Stdio struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Resize delivers terminal size changes for -t.
	Resize <-chan [2]uint16
}

// BootTimeout bounds how long the guest may take to answer the channel.
var BootTimeout = 90 * time.Second

// connect dials the guest until a handshake succeeds, the VMM exits, or
// the boot timeout passes. A dial that fails (the guest is not listening
// yet) is retried every 20 ms, for a quick boot; a handshake that fails
// is the guest's doing, and is retried with a growing pause.
func (vm *VM) connect(ctx context.Context, generation uint64, exited <-chan struct{}) (*channel.Client, error) {
	deadline := time.Now().Add(BootTimeout)
	var retry channel.Backoff
	for {
		refused := false
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := vm.Machine.DialChannel(dctx)
		cancel()
		if err == nil {
			var c *channel.Client
			c, err = channel.NewClient(conn, generation, vm.log)
			if err == nil {
				vm.answered.Store(true)
				return c, nil
			}
			refused = true
		}
		vm.log.Debug("dial guest", "err", err)
		select {
		case <-exited:
			why := "the VM exited"
			if werr := vm.Machine.Wait(); werr != nil {
				why = werr.Error()
			}
			if vm.answered.Load() {
				return nil, fmt.Errorf("the VM stopped: %s%s", why, vm.consoleTail())
			}
			return nil, fmt.Errorf("guest did not start: %s%s", why, vm.consoleTail())
		case <-ctx.Done():
			return nil, ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("guest did not answer within %s%s", BootTimeout, vm.consoleTail())
		}
		if !refused {
			time.Sleep(20 * time.Millisecond)
		} else if err := retry.Wait(ctx); err != nil {
			return nil, err
		}
	}
}

// vmmExited is closed once the VMM process has exited. One goroutine
// waits for it for the session's whole life, however often it dials.
func (s *session) vmmExited() <-chan struct{} {
	s.exitOnce.Do(func() {
		s.exited = make(chan struct{})
		go func() { s.vm.Machine.Wait(); close(s.exited) }()
	})
	return s.exited
}

// Console tails in errors: the last lines, read from at most the last
// consoleTailBytes of the log, however much the guest wrote.
const (
	consoleTailLines = 15
	consoleTailBytes = 16 << 10
)

// consoleTail is the end of the guest console, for boot errors. The
// guest wrote it: what a terminal would act on is escaped.
func (vm *VM) consoleTail() string {
	b, err := rotatelog.Tail(filepath.Join(vm.Record.Dir, "console.log"), consoleTailBytes)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(b) == consoleTailBytes && len(lines) > 1 {
		lines = lines[1:] // the first is cut
	}
	if len(lines) > consoleTailLines {
		lines = lines[len(lines)-consoleTailLines:]
	}
	for i, l := range lines {
		// The console's line ends are CRLF: a CR escaped would end
		// every line in \x0d.
		lines[i] = termsafe.String(strings.TrimSuffix(l, "\r"))
	}
	return "; last lines of the guest console:\n  " + strings.Join(lines, "\n  ")
}

// session holds the supervisor's one connection to the guest; the
// foreground stream and every control client share it.
type session struct {
	vm *VM

	mu sync.Mutex // guards c
	c  *channel.Client

	exitOnce sync.Once
	exited   chan struct{} // see vmmExited
}

// get returns the live session, dialling the guest if there is none.
func (s *session) get(ctx context.Context) (*channel.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		select {
		case <-s.c.Done():
			s.c.Close()
			s.c = nil
		default:
			return s.c, nil
		}
	}
	c, err := s.vm.connect(ctx, s.vm.generation(), s.vmmExited())
	if err != nil {
		return nil, err
	}
	// Volumes first, so the guest mounts them before it starts podman
	// (volumes.go).
	s.vm.volumes.attach(ctx, c)
	s.c = c
	return c, nil
}

// drop discards c after an error so the next get dials again.
func (s *session) drop(c *channel.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == c {
		c.Close()
		s.c = nil
	}
}

func (s *session) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		s.c.Close()
		s.c = nil
	}
}

// generation is the handshake generation: 1 for a cold-booted VM, higher
// for clones.
func (vm *VM) generation() uint64 {
	if vm.Generation == 0 {
		return 1
	}
	return vm.Generation
}

// Run starts the container and streams its output until it exits,
// returning its exit code. ready, if not nil, is called once the container
// has started. While it runs, Run serves the VM's control socket (exec,
// stop, signals from other fcvm commands). ctx cancellation (Ctrl-C,
// SIGTERM) ends it; the caller then powers the VM off.
func (vm *VM) Run(ctx context.Context, stdio Stdio, ready func()) (int, error) {
	logw, err := containerlog.Create(vm.Record.Dir+"/container.log", 0)
	if err != nil {
		return 0, err
	}
	defer logw.Close()
	vm.sess = &session{vm: vm}
	defer vm.sess.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctl, err := vm.serveControl(ctx)
	if err != nil {
		return 0, err
	}
	defer ctl.Close()

	var lastSeq uint64
	started := vm.started
	// stdinDone is set by the stdin copier once stdin hit EOF, so a
	// reconnect does not read it again.
	var stdinDone atomic.Bool
	// retry paces reconnections after broken sessions: a guest that
	// closes every session at once gets a handful of attempts a second,
	// not as many as the host can make.
	var retry channel.Backoff
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := retry.Wait(ctx); err != nil {
				return 0, err
			}
		}
		c, err := vm.sess.get(ctx)
		if err != nil {
			if vm.stopped.Load() {
				return 128 + int(syscall.SIGKILL), nil
			}
			return 0, err
		}
		vm.trace("agent ready")
		if !started {
			if _, _, err := c.Open(ctx, channel.Request{Kind: channel.KindStart, Start: vm.Plan}); err != nil {
				if ctx.Err() != nil {
					return 0, ctx.Err()
				}
				var ge *channel.GuestError
				if errors.As(err, &ge) {
					return 0, fmt.Errorf("start container: %w", err)
				}
				vm.sess.drop(c)
				continue
			}
			started = true
			vm.markStarted() // launch.go
			vm.trace("container started")
		}
		vm.startHealth(ctx) // health.go: once, before ready, which may wait for it
		if ready != nil {
			ready()
			ready = nil
		}
		attached := time.Now()
		code, exited, err := vm.attach(ctx, c, &lastSeq, logw, stdio, &stdinDone)
		if exited {
			close(vm.exited)
			return code, nil
		}
		if vm.stopped.Load() {
			return 128 + int(syscall.SIGKILL), nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		vm.sess.drop(c)
		if time.Since(attached) >= stableSession {
			retry.Reset()
		}
		vm.log.Info("channel broke; reconnecting", "err", err)
	}
}

// stableSession is how long a session must have lasted for its breaking
// to count as a first failure again: one broken by a snapshot is retried
// at once, one the guest keeps closing is retried ever more slowly.
const stableSession = 5 * time.Second

// attach streams output from *lastSeq+1 until exit or a broken session.
func (vm *VM) attach(ctx context.Context, c *channel.Client, lastSeq *uint64, logw *containerlog.Writer, stdio Stdio, stdinDone *atomic.Bool) (code int, exited bool, err error) {
	s, _, err := c.Open(ctx, channel.Request{Kind: channel.KindAttach, Attach: &channel.AttachRequest{From: *lastSeq + 1, Stdin: stdio.Stdin != nil}})
	if err != nil {
		return 0, false, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()

	out := channel.NewStream(s)
	done := make(chan struct{})
	defer close(done)
	if stdio.Stdin != nil && !stdinDone.Load() {
		go func() {
			if out.PumpStdin(stdio.Stdin) {
				stdinDone.Store(true)
			}
		}()
	}
	if stdio.Resize != nil {
		go func() {
			for {
				select {
				case sz := <-stdio.Resize:
					out.Send(channel.FrameResize, channel.Resize(sz[0], sz[1]))
				case <-done:
					return
				}
			}
		}()
	}
	unacked, lastAck := 0, time.Now()
	for {
		f, err := channel.ReadFrame(s)
		if err != nil {
			return 0, false, err
		}
		switch f.Type {
		case channel.FrameStdout, channel.FrameStderr:
			o, err := channel.ParseOutput(f.Payload)
			if err != nil {
				return 0, false, err
			}
			if o.Seq <= *lastSeq {
				continue
			}
			stream, w := containerlog.Stdout, stdio.Stdout
			if f.Type == channel.FrameStderr {
				stream, w = containerlog.Stderr, stdio.Stderr
			}
			if err := logw.Write(containerlog.Record{Time: time.Now(), Stream: stream, Data: o.Data}); err != nil {
				vm.log.Warn("store container output", "err", err)
			}
			if w != nil {
				w.Write(o.Data)
			}
			*lastSeq = o.Seq
			// An ack frees the guest's copy. Under TCG every message
			// costs the guest a wakeup, so bulk output is acked every
			// 256 KiB; a trickle still gets each write acked.
			unacked += len(o.Data)
			if unacked >= 256<<10 || time.Since(lastAck) > 50*time.Millisecond {
				out.Send(channel.FrameAck, channel.Uint64(o.Seq))
				unacked, lastAck = 0, time.Now()
			}
		case channel.FrameExit:
			code, err := channel.ParseUint32(f.Payload)
			if err != nil {
				return 0, false, err
			}
			return int(int32(code)), true, nil
		case channel.FrameError:
			return 0, false, &channel.GuestError{Msg: string(f.Payload)}
		}
	}
}

// PowerOff asks the guest to power off and waits up to grace for the VMM to
// exit, then stops it.
func (vm *VM) PowerOff(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	dctx, dcancel := context.WithTimeout(ctx, time.Second)
	conn, err := vm.Machine.DialChannel(dctx)
	dcancel()
	if err == nil {
		if c, err := channel.NewClient(conn, 1, vm.log); err == nil {
			if s, _, err := c.Open(ctx, channel.Request{Kind: channel.KindPoweroff}); err == nil {
				s.Close()
			}
			defer c.Close()
		}
	}
	vm.Machine.Stop(context.Background(), grace)
}

// Finish records how the VM ended.
func (vm *VM) Finish(code int, runErr error) {
	vm.store.Update(vm.Record.ID, func(r *state.Record) error {
		r.Finished = time.Now()
		r.Status = state.StatusExited
		if runErr != nil && !errors.Is(runErr, context.Canceled) {
			r.Error = runErr.Error()
		} else {
			r.ExitCode = &code
		}
		return nil
	})
}

// trace reports a milestone to Trace, once per name.
func (vm *VM) trace(event string) {
	if vm.Trace == nil || vm.traced[event] {
		return
	}
	if vm.traced == nil {
		vm.traced = map[string]bool{}
	}
	vm.traced[event] = true
	vm.Trace(event)
}
