package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fcvm/fcvm/internal/channel"
)

// ControlSocket is the name of a VM's control socket in its runtime dir.
// Other fcvm commands (exec, stop) reach the guest through it, because the
// supervisor holds the VM's only channel connection.
const ControlSocket = "control.sock"

// KindStop asks the supervisor to stop the VM: SIGTERM to the container,
// then after Request.Signal seconds the VM is killed.
const KindStop channel.Kind = "stop"

// serveControl listens on the control socket until ctx ends.
func (vm *VM) serveControl(ctx context.Context) (io.Closer, error) {
	path := filepath.Join(vm.Record.RuntimeDir, ControlSocket)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				vm.control(ctx, conn)
			}()
		}
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	return closerFunc(func() error {
		stop()
		err := ln.Close()
		return err
	}), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// controlRequest is what other fcvm commands send on the control socket:
// a stream request for the guest, which the supervisor passes on, or one
// it answers itself (KindStop, KindSnapshot, KindPause, KindResume).
type controlRequest struct {
	channel.Request
	// Tag names the snapshot a KindSnapshot request makes.
	Tag string `json:"tag,omitempty"`
}

// readControl reads the opening frame of a control connection.
func readControl(r io.Reader) (controlRequest, error) {
	f, err := channel.ReadFrame(r)
	if err != nil {
		return controlRequest{}, fmt.Errorf("read control request: %w", err)
	}
	var req controlRequest
	if err := json.Unmarshal(f.Payload, &req); err != nil || f.Type != channel.FrameOK || req.Kind == "" {
		return controlRequest{}, fmt.Errorf("read control request: not a request (frame type %d): %v", f.Type, err)
	}
	return req, nil
}

func (vm *VM) control(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	req, err := readControl(conn)
	if err != nil {
		return
	}
	switch req.Kind {
	case KindStop:
		vm.stop(ctx, time.Duration(req.Signal)*time.Second)
		channel.Reply(conn, nil)
		return
	case KindSnapshot:
		m, err := vm.Snapshot(ctx, req.Tag)
		var b []byte
		if err == nil {
			b, err = json.Marshal(m)
		}
		if err != nil {
			channel.ReplyError(conn, err)
			return
		}
		channel.Reply(conn, b)
		return
	case KindPause, KindResume:
		op := vm.pause
		if req.Kind == KindResume {
			op = vm.resume
		}
		if err := op(ctx); err != nil {
			channel.ReplyError(conn, err)
			return
		}
		channel.Reply(conn, nil)
		return
	}
	if vm.paused.Load() {
		// A frozen guest would leave the request hanging until unpause.
		channel.ReplyError(conn, vm.errPaused())
		return
	}
	c, err := vm.sess.get(ctx)
	if err != nil {
		channel.ReplyError(conn, err)
		return
	}
	s, payload, err := c.Open(ctx, req.Request)
	if err != nil {
		var ge *channel.GuestError
		if errors.As(err, &ge) {
			channel.ReplyError(conn, errors.New(ge.Msg))
		} else {
			channel.ReplyError(conn, err)
		}
		return
	}
	defer s.Close()
	if err := channel.Reply(conn, payload); err != nil {
		return
	}
	// Splice: each direction ends the other when it finishes.
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, conn); s.Close(); done <- struct{}{} }()
	go func() { io.Copy(conn, s); conn.Close(); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// stop sends SIGTERM (or the VM's --stop-signal) to the container and, if it has not exited after
// grace, kills the VM. A paused VM is resumed first, as podman's stop
// does for a paused container, so that the guest can take the signal.
func (vm *VM) stop(ctx context.Context, grace time.Duration) {
	if vm.paused.Load() {
		if err := vm.resume(ctx); err != nil {
			vm.log.Warn("resume before stop", "err", err)
		}
	}
	vm.stopRequested.Store(true) // restart.go: no restart after a stop
	sig := int(syscall.SIGTERM)
	if vm.Record.StopSignal != 0 {
		sig = vm.Record.StopSignal
	}
	if c, err := vm.sess.get(ctx); err == nil {
		if s, _, err := c.Open(ctx, channel.Request{Kind: channel.KindSignal, Signal: sig}); err == nil {
			s.Close()
		}
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-vm.exited:
		return
	case <-ctx.Done():
		return
	case <-t.C:
	}
	vm.stopped.Store(true)
	vm.Machine.Stop(context.Background(), 0)
}

// RequestStop asks the supervisor of the VM whose runtime dir is runtimeDir
// to stop it: SIGTERM to the container, then after grace (whole seconds)
// the VM is powered off. It returns once the request is delivered.
func RequestStop(ctx context.Context, runtimeDir string, grace time.Duration) error {
	secs := int((grace + time.Second - 1) / time.Second)
	conn, _, err := dialControl(ctx, runtimeDir, controlRequest{Request: channel.Request{Kind: KindStop, Signal: secs}})
	if err != nil {
		return err
	}
	return conn.Close()
}

// Dial connects to the control socket of the VM whose runtime dir is dir
// and sends req, returning the stream after the supervisor's reply.
func Dial(ctx context.Context, runtimeDir string, req channel.Request) (net.Conn, []byte, error) {
	return dialControl(ctx, runtimeDir, controlRequest{Request: req})
}

func dialControl(ctx context.Context, runtimeDir string, req controlRequest) (net.Conn, []byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", filepath.Join(runtimeDir, ControlSocket))
	if err != nil {
		return nil, nil, fmt.Errorf("reach the VM's supervisor: %w", err)
	}
	b, err := json.Marshal(req)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("encode control request: %w", err)
	}
	if err := channel.WriteFrame(conn, channel.FrameOK, b); err != nil {
		conn.Close()
		return nil, nil, err
	}
	payload, err := channel.ReadReply(conn)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, payload, nil
}
