package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/creack/pty"

	"github.com/fcvm/fcvm/internal/channel"
)

// execArgs builds the command line for an exec request: podman exec in the
// container, or the command itself in the VM.
func execArgs(req *channel.ExecRequest) []string {
	if req.InVM {
		return req.Cmd
	}
	a := append([]string{"podman"}, podmanGlobal()...)
	a = append(a, "exec")
	if req.Stdin {
		a = append(a, "--interactive")
	}
	if req.TTY {
		a = append(a, "--tty")
	}
	if req.Detach {
		a = append(a, "--detach")
	}
	for _, e := range req.Env {
		a = append(a, "--env", e)
	}
	if req.Workdir != "" {
		a = append(a, "--workdir", req.Workdir)
	}
	if req.User != "" {
		a = append(a, "--user", req.User)
	}
	a = append(a, containerName)
	return append(a, req.Cmd...)
}

// exec runs one command, streaming its stdio as frames.
func (a *Agent) exec(ctx context.Context, req *channel.ExecRequest, conn net.Conn) error {
	if req == nil || len(req.Cmd) == 0 {
		return errors.New("exec: no command")
	}
	if !req.InVM {
		if _, err := a.container(); err != nil {
			return err
		}
	}
	argv := execArgs(req)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=xterm"}
	if req.InVM {
		cmd.Env = append(cmd.Env, req.Env...)
		cmd.Dir = req.Workdir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	var wmu sync.Mutex // serialises frames to conn
	send := func(t channel.FrameType, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return channel.WriteFrame(conn, t, p)
	}
	var stdin io.WriteCloser
	var tty *os.File
	var copies sync.WaitGroup
	copyOut := func(t channel.FrameType, r io.Reader) {
		defer copies.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 && send(t, buf[:n]) != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}
	if req.TTY {
		var err error
		if cmd.SysProcAttr.Setctty = true; req.Rows == 0 {
			req.Rows, req.Cols = 24, 80
		}
		tty, err = pty.StartWithAttrs(cmd, &pty.Winsize{Rows: req.Rows, Cols: req.Cols}, cmd.SysProcAttr)
		if err != nil {
			return a.execFailed(conn, err)
		}
		stdin = tty
		copies.Add(1)
		go copyOut(channel.FrameStdout, tty)
	} else {
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return err
		}
		if req.Stdin {
			if stdin, err = cmd.StdinPipe(); err != nil {
				return err
			}
		}
		if err := cmd.Start(); err != nil {
			return a.execFailed(conn, err)
		}
		copies.Add(2)
		go copyOut(channel.FrameStdout, stdout)
		go copyOut(channel.FrameStderr, stderr)
	}
	if err := send(channel.FrameOK, nil); err != nil {
		cmd.Process.Kill()
	}
	go func() {
		for {
			f, err := channel.ReadFrame(conn)
			if err != nil {
				// The host went away: the command must not outlive it.
				if cmd.ProcessState == nil {
					cmd.Process.Kill()
				}
				return
			}
			switch f.Type {
			case channel.FrameStdin:
				if stdin != nil {
					stdin.Write(f.Payload)
				}
			case channel.FrameStdinEOF:
				if stdin != nil && tty == nil {
					stdin.Close()
				} else if tty != nil {
					tty.Write([]byte{4}) // ^D
				}
			case channel.FrameResize:
				if rows, cols, err := channel.ParseResize(f.Payload); err == nil && tty != nil {
					pty.Setsize(tty, &pty.Winsize{Rows: rows, Cols: cols})
				}
			case channel.FrameSignal:
				if sig, err := channel.ParseUint32(f.Payload); err == nil {
					cmd.Process.Signal(syscall.Signal(sig))
				}
			}
		}
	}()
	if tty == nil {
		copies.Wait()
	}
	err := cmd.Wait()
	if tty != nil {
		copies.Wait()
		tty.Close()
	}
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return send(channel.FrameError, []byte(err.Error()))
		}
		code = ee.ExitCode()
		if code < 0 {
			code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
		}
	}
	return send(channel.FrameExit, channel.Uint32(uint32(code)))
}

// startFailure is the exit code podman gives a command that cannot start:
// 127 not found, 126 not executable.
func startFailure(err error) (int, bool) {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
		return 127, true
	case errors.Is(err, os.ErrPermission):
		return 126, true
	}
	return 0, false
}

// execFailed reports a command that could not start: as an exit code where
// podman has one (the stream then looks like any other), else as an error.
func (a *Agent) execFailed(conn net.Conn, err error) error {
	code, ok := startFailure(err)
	if !ok {
		return fmt.Errorf("exec: %w", err)
	}
	channel.Reply(conn, nil)
	channel.WriteFrame(conn, channel.FrameStderr, []byte(fmt.Sprintf("fc-agent: %v\n", err)))
	return channel.WriteFrame(conn, channel.FrameExit, channel.Uint32(uint32(code)))
}
