package engine

import (
	"context"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
	"github.com/fcvm/fcvm/internal/supervisor"
)

// A pod VM runs members besides its own container (see KindStart): the
// containerd shim's CRI pods. These are their verbs; each names the VM
// and the member.

// StartMember starts member in the running VM nameOrID from plan, whose
// Slot names the disk holding its image, and returns once it runs.
func (e *Engine) StartMember(ctx context.Context, nameOrID, member string, plan *channel.Plan) error {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return err
	}
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindStart, Container: member, Start: plan})
	if err != nil {
		return fmt.Errorf("start %s in %s: %w", member, nameOrID, guestText(err))
	}
	return conn.Close()
}

// AttachMember copies member's output to stdout and stderr, and stdin (if
// not nil) to it, from its first output on until it exits, and returns
// its exit code. Output is acknowledged as it is written, which frees the
// guest's copy.
func (e *Engine) AttachMember(ctx context.Context, nameOrID, member string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return 0, err
	}
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, channel.Request{Kind: channel.KindAttach, Container: member,
		Attach: &channel.AttachRequest{From: 1, Stdin: stdin != nil}})
	if err != nil {
		return 0, fmt.Errorf("attach %s in %s: %w", member, nameOrID, guestText(err))
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	s := channel.NewStream(conn)
	if stdin != nil {
		go s.PumpStdin(stdin)
	}
	lastAck := time.Now()
	for {
		f, err := channel.ReadFrame(conn)
		if err != nil {
			return 0, fmt.Errorf("attach %s in %s: connection to the VM lost before it exited: %w", member, nameOrID, err)
		}
		switch f.Type {
		case channel.FrameStdout, channel.FrameStderr:
			o, err := channel.ParseOutput(f.Payload)
			if err != nil {
				return 0, err
			}
			w := stdout
			if f.Type == channel.FrameStderr {
				w = stderr
			}
			w.Write(o.Data)
			if time.Since(lastAck) > 50*time.Millisecond || len(o.Data) >= 16<<10 {
				s.Send(channel.FrameAck, channel.Uint64(o.Seq))
				lastAck = time.Now()
			}
		case channel.FrameExit:
			code, err := channel.ParseUint32(f.Payload)
			if err != nil {
				return 0, err
			}
			return int(int32(code)), nil
		case channel.FrameError:
			return 0, fmt.Errorf("attach %s in %s: %w", member, nameOrID, &channel.GuestError{Msg: string(f.Payload)})
		}
	}
}

// SignalMember sends sig to member's main process.
func (e *Engine) SignalMember(ctx context.Context, nameOrID, member string, sig syscall.Signal) error {
	return e.memberOp(ctx, nameOrID, member, channel.Request{Kind: channel.KindSignal, Signal: int(sig)})
}

// RemoveMember removes an exited member from the VM, which frees its slot.
func (e *Engine) RemoveMember(ctx context.Context, nameOrID, member string) error {
	return e.memberOp(ctx, nameOrID, member, channel.Request{Kind: channel.KindRemove})
}

func (e *Engine) memberOp(ctx context.Context, nameOrID, member string, req channel.Request) error {
	rec, err := e.Running(nameOrID)
	if err != nil {
		return err
	}
	req.Container = member
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, _, err := supervisor.Dial(ctx, rec.RuntimeDir, req)
	if err != nil {
		return fmt.Errorf("%s %s in %s: %w", req.Kind, member, nameOrID, guestText(err))
	}
	return conn.Close()
}
