package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// Exec is a command running in a VM: its input goes in through Stdin,
// Signal and Resize, its output comes out of Wait.
type Exec struct {
	vm   string
	conn net.Conn
	out  *channel.Stream
}

// Exec starts req in the running VM nameOrID.
func (e *Engine) Exec(ctx context.Context, nameOrID string, req channel.ExecRequest) (*Exec, error) {
	return e.ExecMember(ctx, nameOrID, "", req)
}

// ExecMember starts req in the pod member of the running VM nameOrID
// ("" for the VM's container).
func (e *Engine) ExecMember(ctx context.Context, nameOrID, member string, req channel.ExecRequest) (*Exec, error) {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return nil, err
	}
	where := nameOrID
	if member != "" {
		where = member
	}
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindExec, Container: member, Exec: &req})
	if err != nil {
		if member != "" {
			err = guestText(err)
		}
		return nil, fmt.Errorf("exec in %s: %w", where, err)
	}
	return &Exec{vm: where, conn: conn, out: channel.NewStream(conn)}, nil
}

// Stdin feeds r to the command until r ends (then the command sees end of
// file) or the command ends. It returns at once.
func (x *Exec) Stdin(r io.Reader) { go x.out.PumpStdin(r) }

// Signal sends sig to the command.
func (x *Exec) Signal(sig syscall.Signal) error {
	return x.out.Send(channel.FrameSignal, channel.Uint32(uint32(sig)))
}

// Resize sets the size of the command's terminal.
func (x *Exec) Resize(rows, cols uint16) error {
	return x.out.Send(channel.FrameResize, channel.Resize(rows, cols))
}

// Wait copies the command's output to stdout and stderr until it exits
// and returns its exit code. A stream that ends without one (the guest
// died, the channel reset) is an error, never a hang.
func (x *Exec) Wait(stdout, stderr io.Writer) (int, error) {
	for {
		f, err := channel.ReadFrame(x.conn)
		if err != nil {
			return 0, fmt.Errorf("exec in %s: connection to the VM lost before the command exited (see fcvm ls and fcvm logs): %w", x.vm, err)
		}
		switch f.Type {
		case channel.FrameStdout:
			stdout.Write(f.Payload)
		case channel.FrameStderr:
			stderr.Write(f.Payload)
		case channel.FrameExit:
			code, err := channel.ParseUint32(f.Payload)
			if err != nil {
				return 0, fmt.Errorf("exec in %s: %w", x.vm, err)
			}
			return int(int32(code)), nil
		case channel.FrameError:
			return 0, fmt.Errorf("exec in %s: %w", x.vm, &channel.GuestError{Msg: string(f.Payload)})
		}
	}
}

// Close ends the exec stream; a command still running is killed.
func (x *Exec) Close() error { return x.conn.Close() }
