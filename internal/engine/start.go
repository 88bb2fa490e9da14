package engine

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
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
}

// Attach streams the output the container of the running VM nameOrID
// writes from now on, and o.Stdin to it, until the container exits, and
// returns its exit code. Ending ctx detaches and leaves the VM running.
// Output comes from the container log the supervisor keeps, so an attached
// client never takes output from the supervisor or another client.
func (e *Engine) Attach(ctx context.Context, nameOrID string, o AttachOptions) (int, error) {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return 0, err
	}
	if o.Stdin != nil {
		// An attach stream that asks for output past any there will be
		// carries only stdin (and, at the end, the exit code).
		var conn net.Conn
		conn, _, err = supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindAttach,
			Attach: &channel.AttachRequest{From: math.MaxUint64, Stdin: true}})
		if err != nil {
			return 0, fmt.Errorf("attach %s: %w", nameOrID, err)
		}
		defer conn.Close()
		go channel.NewStream(conn).PumpStdin(o.Stdin)
	}
	err = e.Logs(ctx, rec.ID, LogsOptions{OnlyNew: true, Follow: true}, func(r containerlog.Record) error {
		w := o.Stdout
		if r.Stream == containerlog.Stderr {
			w = o.Stderr
		}
		_, err := w.Write(r.Data)
		return err
	})
	if err != nil {
		return 0, err
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return e.Wait(ctx, rec.ID)
}
