package engine

import (
	"context"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/containerlog"
	"github.com/fcvm/fcvm/internal/state"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// Start boots the stopped VM nameOrID again with this process as its
// supervisor, as podman's start does for a stopped container: same name,
// ports, volumes and upper disk, a new guest boot. The caller runs it and
// finishes it as after Launch. A VM that is running is refused.
func (e *Engine) Start(ctx context.Context, nameOrID string, detach bool) (*supervisor.VM, error) {
	_, rec, err := e.record(nameOrID)
	if err != nil {
		return nil, err
	}
	if s := rec.Effective(); s.Live() {
		return nil, fmt.Errorf("start %s: the VM is %s: stop it first with fcvm stop %s, or use fcvm restart", nameOrID, s, nameOrID)
	}
	// The last supervisor records the exit before it tears the network
	// and runtime dir down: the new one must not start under it.
	if !waitSupervisorGone(ctx, rec.Supervisor, 30*time.Second) {
		return nil, fmt.Errorf("start %s: the VM's last supervisor (pid %d) is still cleaning up: try again shortly", nameOrID, rec.Supervisor.PID)
	}
	return supervisor.Relaunch(ctx, e.log, e.dirs, rec.ID, detach)
}

func waitSupervisorGone(ctx context.Context, p state.Process, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for p.Alive() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// AttachOptions are where an attached client's streams go.
type AttachOptions struct {
	// Stdin, if set, goes to the container's stdin (a container run
	// without -i has none, and the input is dropped); its end closes the
	// container's stdin, as podman's attach does.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Resize delivers terminal size changes for a container with a
	// terminal (run -t); Signals, signals for its main process (podman's
	// --sig-proxy). Either may be nil.
	Resize  <-chan [2]uint16
	Signals <-chan syscall.Signal
}

// Attach streams the output the container of the running VM nameOrID
// writes from now on, and o.Stdin to it, until the container exits, and
// returns its exit code. Ending ctx detaches and leaves the VM running.
//
// Output comes from the container log the supervisor keeps, so an
// attached client never takes output from the supervisor or another
// client. The exit code comes from the guest on an attach stream of its
// own that asks for output past any there will be (so it carries only
// stdin and, at the end, the exit code): a restart policy that boots the
// VM again at once cannot hide it.
func (e *Engine) Attach(ctx context.Context, nameOrID string, o AttachOptions) (int, error) {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return 0, err
	}
	path := filepath.Join(rec.Dir, "container.log")
	old, err := containerlog.ReadAll(path)
	if err != nil {
		return 0, err
	}
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindAttach,
		Attach: &channel.AttachRequest{From: math.MaxUint64, Stdin: o.Stdin != nil}})
	if err != nil {
		return 0, fmt.Errorf("attach %s: %w", nameOrID, err)
	}
	defer conn.Close()
	stream := channel.NewStream(conn)
	if o.Stdin != nil {
		go stream.PumpStdin(o.Stdin)
	}
	forwarded := make(chan struct{})
	defer close(forwarded)
	go func() {
		for {
			select {
			case sz := <-o.Resize:
				stream.Send(channel.FrameResize, channel.Resize(sz[0], sz[1]))
			case sig := <-o.Signals:
				stream.Send(channel.FrameSignal, channel.Uint32(uint32(sig)))
			case <-forwarded:
				return
			}
		}
	}()
	code := -1 // none from the guest: the VM ended first
	done := make(chan struct{})
	go func() {
		defer close(done)
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		for {
			f, err := channel.ReadFrame(conn)
			if err != nil {
				return
			}
			if f.Type == channel.FrameExit {
				if c, err := channel.ParseUint32(f.Payload); err == nil {
					code = int(int32(c))
				}
				break
			}
		}
		// The supervisor stores the last output before it records the
		// exit: wait for that run to be over, then drain the log.
		e.waitRunOver(ctx, rec, 30*time.Second)
	}()
	err = containerlog.Follow(path, len(old), done, func(r containerlog.Record) error {
		w := o.Stdout
		if r.Stream == containerlog.Stderr {
			w = o.Stderr
		}
		_, err := w.Write(r.Data)
		return err
	})
	<-done
	if err != nil {
		return 0, err
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if code < 0 {
		return e.Wait(ctx, rec.ID)
	}
	return code, nil
}

// waitRunOver waits, up to d, until the run of rec's VM that was live
// when rec was read is over: the record exited, gone, or started again.
func (e *Engine) waitRunOver(ctx context.Context, rec *state.Record, d time.Duration) {
	store, err := e.store()
	if err != nil {
		return
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		r, err := store.Get(rec.ID)
		if err != nil || !r.Effective().Live() || !r.Started.Equal(rec.Started) {
			return
		}
	}
}
