package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/fcvm/fcvm/internal/channel"
)

// execArgs builds the command line for an exec request: podman exec in the
// container, or the command itself in the VM. marker tags the command's
// environment so that its processes can be found for signals.
func execArgs(req *channel.ExecRequest, marker string) []string {
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
	if marker != "" {
		a = append(a, "--env", markerVar+"="+marker)
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

// markerVar is set in the environment of every command run by exec in the
// container. podman exec does not pass signals on, and the command runs
// under conmon, not under it, so the agent finds the command's processes
// by this tag in /proc/PID/environ.
const markerVar = "FCVM_EXEC"

// markedPIDs lists the processes whose environment carries marker.
func markedPIDs(marker string) []int {
	want := []byte(markerVar + "=" + marker + "\x00")
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && bytes.Contains(append([]byte{0}, b...), append([]byte{0}, want...)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// execProc is one running exec command.
type execProc struct {
	cmd    *exec.Cmd
	marker string        // "" for a command in the VM
	done   chan struct{} // closed once cmd has been waited for
}

// signal delivers sig the way a terminal's Ctrl-C would: to every process
// of the command (its process group in the VM; every marked process in
// the container).
func (p *execProc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	if p.marker == "" {
		syscall.Kill(-p.cmd.Process.Pid, sig)
		return
	}
	for _, pid := range markedPIDs(p.marker) {
		syscall.Kill(pid, sig)
	}
	if sig == syscall.SIGKILL {
		p.cmd.Process.Kill()
	}
}

// reapOnce starts reapConmons once.
var reapOnce sync.Once

// reapConmons reaps orphaned conmon processes for as long as the agent
// runs. conmon daemonises, so every container and every exec session
// leaves one whose parent is PID 1, the agent, which must reap it or keep
// a zombie per exec. A blanket wait4(-1) would steal the exit status of
// the agent's own children (podman run, podman exec) from exec.Cmd.Wait;
// the agent never starts conmon itself, so reaping by name is safe.
func reapConmons() {
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, syscall.SIGCHLD)
	tick := time.NewTicker(10 * time.Second)
	for {
		select {
		case <-sig:
		case <-tick.C:
		}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err == nil && bytes.HasPrefix(b, []byte(e.Name()+" (conmon) Z 1 ")) {
				var ws syscall.WaitStatus
				syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			}
		}
	}
}

// exec runs one command, streaming its stdio as frames.
func (a *Agent) exec(ctx context.Context, req *channel.ExecRequest, conn net.Conn) error {
	if req == nil || len(req.Cmd) == 0 {
		return errors.New("exec: no command")
	}
	reapOnce.Do(func() { go reapConmons() })
	var marker string
	if !req.InVM {
		c, err := a.container()
		if err != nil {
			return err
		}
		// Right after start podman may not have started the container's
		// process yet; podman exec would refuse it.
		select {
		case <-c.up:
		case <-ctx.Done():
			return ctx.Err()
		}
		b := make([]byte, 8)
		rand.Read(b)
		marker = hex.EncodeToString(b)
	}
	argv := execArgs(req, marker)
	// errTail, set on the fast path, keeps the end of stderr, where the
	// runtime reports a command it could not start.
	var errTail *tailWriter
	if fastExecOK(req) {
		if fast, spec, ok := runtimeExecArgs(req, marker); ok {
			argv, errTail = fast, &tailWriter{}
			defer os.Remove(spec)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=xterm"}
	if req.InVM {
		cmd.Env = append(cmd.Env, req.Env...)
		cmd.Dir = req.Workdir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	proc := &execProc{cmd: cmd, marker: marker, done: make(chan struct{})}

	out := channel.NewStream(conn)
	send := out.Send
	var stdin io.WriteCloser
	var tty *os.File
	var copies sync.WaitGroup
	copyOut := func(t channel.FrameType, r io.Reader) {
		defer copies.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 && send(t, buf[:n]) != nil {
				// The host is gone; keep draining so the command
				// does not block on a full pipe before it is killed.
				io.Copy(io.Discard, r)
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
		if errTail != nil {
			stderr = io.NopCloser(io.TeeReader(stderr, errTail))
		}
		go copyOut(channel.FrameStderr, stderr)
	}
	if err := send(channel.FrameOK, nil); err != nil {
		proc.signal(syscall.SIGKILL)
	}
	go a.execInput(conn, proc, stdin, tty)
	if tty == nil {
		copies.Wait()
	}
	err := cmd.Wait()
	close(proc.done)
	if tty != nil {
		// The pty's output ends with the last process holding it, which
		// may outlive the command (a background job): do not wait for
		// more than what is already there.
		tty.SetReadDeadline(time.Now().Add(2 * time.Second))
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
		if errTail != nil {
			if c, ok := runtimeFailure(code, errTail.tail()); ok {
				code = c
			}
		}
	}
	return send(channel.FrameExit, channel.Uint32(uint32(code)))
}

// execInput takes stdin, resizes and signals from the host until the
// stream ends. A host that goes away takes the command with it.
func (a *Agent) execInput(conn net.Conn, proc *execProc, stdin io.WriteCloser, tty *os.File) {
	for {
		f, err := channel.ReadFrame(conn)
		if err != nil {
			proc.signal(syscall.SIGKILL)
			return
		}
		switch f.Type {
		case channel.FrameStdin:
			if stdin != nil {
				stdin.Write(f.Payload)
			}
		case channel.FrameStdinEOF:
			switch {
			case tty != nil:
				tty.Write([]byte{4}) // ^D, as a terminal would
			case stdin != nil:
				stdin.Close()
			}
		case channel.FrameResize:
			if rows, cols, err := channel.ParseResize(f.Payload); err == nil && tty != nil {
				pty.Setsize(tty, &pty.Winsize{Rows: rows, Cols: cols})
			}
		case channel.FrameSignal:
			if sig, err := channel.ParseUint32(f.Payload); err == nil {
				proc.signal(syscall.Signal(sig))
			}
		}
	}
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
