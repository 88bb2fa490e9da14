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
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/fcvm/fcvm/internal/channel"
)

// markerVar is set in the environment of every command run by exec in the
// container. The command runs in the container's PID namespace under crun
// exec, which does not pass signals on, so the agent finds the command's
// processes by this tag in /proc/PID/environ.
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
	cmd    *exec.Cmd     // nil for a command the zygote started
	marker string        // "" for a command in the VM
	pgid   int           // a zygote's command's process group (its PID)
	done   chan struct{} // closed once cmd has been waited for
}

// signal delivers sig the way a terminal's Ctrl-C would: to every process
// of the command (its process group in the VM; in the container its
// process group, if the zygote started it, and every marked process).
// The group takes the signal as one, a child being forked at that moment
// included; the scan of /proc finds what left the group, but not a child
// forked after it read the list, so a SIGKILL scans until none is left.
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
	if p.pgid > 0 {
		syscall.Kill(-p.pgid, sig)
	}
	for round := 0; round < killRounds; round++ {
		pids := markedPIDs(p.marker)
		for _, pid := range pids {
			syscall.Kill(pid, sig)
		}
		if sig != syscall.SIGKILL || len(pids) == 0 {
			break
		}
		time.Sleep(killRoundWait)
	}
	if sig == syscall.SIGKILL && p.cmd != nil {
		p.cmd.Process.Kill()
	}
}

// killRounds and killRoundWait bound the scans a SIGKILL makes for a
// command's processes; each round finds fewer (a dead process's environ
// reads empty, so the killed drop out of the scan at once).
const (
	killRounds    = 20
	killRoundWait = 5 * time.Millisecond
)

// The agent is PID 1: orphans of the guest (crun's intermediate
// processes, a detached exec's command once its parent is gone) become its
// children, and it must reap them or keep a zombie each. A blanket
// wait4(-1) would steal the exit status of the children it waits for
// through os/exec, so those are registered (startChild) and left alone.
var (
	// reapMu is held for reading while a child starts and registers,
	// and for writing while orphans are reaped, so a child that exits
	// at once is never taken for an orphan.
	reapMu   sync.RWMutex
	kidsMu   sync.Mutex // guards kids
	kids     = map[int]int{}
	reapOnce sync.Once
)

// startChild starts cmd as a child the agent waits for itself
// (waitChild).
func startChild(cmd *exec.Cmd) error {
	return startChildWith(cmd, cmd.Start)
}

// startChildWith is startChild for a command that start starts (a pty
// helper).
func startChildWith(cmd *exec.Cmd, start func() error) error {
	reapOnce.Do(func() { go reapOrphans() })
	reapMu.RLock()
	defer reapMu.RUnlock()
	if err := start(); err != nil {
		return err
	}
	kidsMu.Lock()
	kids[cmd.Process.Pid]++
	kidsMu.Unlock()
	return nil
}

// waitChild waits for a child startChild started.
func waitChild(cmd *exec.Cmd) error {
	err := cmd.Wait()
	kidsMu.Lock()
	if kids[cmd.Process.Pid]--; kids[cmd.Process.Pid] <= 0 {
		delete(kids, cmd.Process.Pid)
	}
	kidsMu.Unlock()
	return err
}

// reapOrphans reaps zombie children the agent did not start through
// startChild, for as long as the agent runs.
func reapOrphans() {
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, syscall.SIGCHLD)
	tick := time.NewTicker(10 * time.Second)
	for {
		select {
		case <-sig:
		case <-tick.C:
		}
		reapMu.Lock()
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			// pid (comm) state ppid ...; comm may hold spaces and parens.
			i := bytes.LastIndexByte(b, ')')
			if i < 0 || !bytes.HasPrefix(b[i:], []byte(") Z 1 ")) {
				continue
			}
			kidsMu.Lock()
			own := kids[pid] > 0
			kidsMu.Unlock()
			if !own {
				var ws syscall.WaitStatus
				syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			}
		}
		reapMu.Unlock()
	}
}

// exec runs one command, streaming its stdio as frames: in the VM, or in
// the container through crun exec with the container's own process spec.
func (a *Agent) exec(ctx context.Context, name string, req *channel.ExecRequest, conn net.Conn) error {
	if req == nil || len(req.Cmd) == 0 {
		return errors.New("exec: no command")
	}
	argv := req.Cmd
	var marker string
	var console *consoleSocket
	if !req.InVM && req.Detach {
		// Nothing would read a detached command's terminal.
		req.TTY = false
	}
	if req.TTY && req.Rows == 0 {
		req.Rows, req.Cols = 24, 80
	}
	if !req.InVM {
		c, err := a.containerOf(name)
		if err != nil {
			return err
		}
		// Right after start crun may not have started the container's
		// process yet.
		select {
		case <-c.up:
		case <-ctx.Done():
			return ctx.Err()
		}
		b := make([]byte, 8)
		rand.Read(b)
		marker = hex.EncodeToString(b)
		proc, err := execProcess(filepath.Join(runtimeStateDir, c.name, "config.json"), filepath.Join(c.bundle, "rootfs"), req, marker)
		if err != nil {
			return err
		}
		// Pod members exec through crun: the zygote stands in the VM's
		// container only.
		if zr, err := zygoteRequestFor(proc); err == nil && c.name == containerName {
			// A zygote found dead is replaced once; then crun.
			for range 2 {
				z := c.zygote(a.log)
				if z == nil {
					break
				}
				if err := a.execZygote(conn, req, z, zr, marker); !errors.Is(err, errZygoteLost) {
					return err
				}
			}
		}
		var spec string
		if argv, spec, err = runtimeExecArgs(req, proc, marker, c.name); err != nil {
			return err
		}
		defer os.Remove(spec)
		if req.TTY {
			if console, err = newConsoleSocket(filepath.Join(runtimeExecDir, marker+".sock")); err != nil {
				return err
			}
			defer console.Close()
			argv = append(argv[:2:2], append([]string{"--console-socket", console.path}, argv[2:]...)...)
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
	if req.Detach && !req.InVM {
		return execDetached(conn, cmd)
	}

	out := channel.NewStream(conn)
	send := out.Send
	var stdin io.WriteCloser
	var tty *os.File
	var pipes, ttyCopy sync.WaitGroup
	copyOut := func(wg *sync.WaitGroup, t channel.FrameType, r io.Reader) {
		defer wg.Done()
		copyFrames(send, t, r)
	}
	// errTail keeps the end of crun's stderr, where it reports a command
	// it could not start.
	errTail := &tailWriter{}
	if req.TTY && req.InVM {
		cmd.SysProcAttr.Setctty = true
		var err error
		if err = startChildWith(cmd, func() error {
			tty, err = pty.StartWithAttrs(cmd, &pty.Winsize{Rows: req.Rows, Cols: req.Cols}, cmd.SysProcAttr)
			return err
		}); err != nil {
			return a.execFailed(conn, err)
		}
		stdin = tty
		ttyCopy.Add(1)
		go copyOut(&ttyCopy, channel.FrameStdout, tty)
	} else {
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return err
		}
		if req.Stdin && console == nil {
			if stdin, err = cmd.StdinPipe(); err != nil {
				return err
			}
		}
		if err := startChild(cmd); err != nil {
			return a.execFailed(conn, err)
		}
		pipes.Add(2)
		go copyOut(&pipes, channel.FrameStdout, stdout)
		go copyOut(&pipes, channel.FrameStderr, io.TeeReader(stderr, errTail))
		if console != nil {
			crunDone := make(chan struct{})
			go func() { pipes.Wait(); close(crunDone) }()
			if tty, err = console.receive(crunDone, startTimeout); err != nil {
				proc.signal(syscall.SIGKILL)
				<-crunDone
				waitChild(cmd)
				return fmt.Errorf("exec terminal: %w: %s", err, bytes.TrimSpace(errTail.tail()))
			}
			stdin = tty
			ttyCopy.Add(1)
			go copyOut(&ttyCopy, channel.FrameStdout, tty)
		}
	}
	if err := send(channel.FrameOK, nil); err != nil {
		proc.signal(syscall.SIGKILL)
	}
	go a.execInput(conn, proc, stdin, tty)
	pipes.Wait()
	err := waitChild(cmd)
	close(proc.done)
	if tty != nil {
		// The pty's output ends with the last process holding it, which
		// may outlive the command (a background job): do not wait for
		// more than what is already there.
		tty.SetReadDeadline(time.Now().Add(2 * time.Second))
		ttyCopy.Wait()
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
		if !req.InVM {
			if c, ok := runtimeFailure(code, errTail.tail()); ok {
				code = c
			}
		}
	}
	return send(channel.FrameExit, channel.Uint32(uint32(code)))
}

// copyFrames sends what r reads as frames of type t until r ends.
func copyFrames(send func(channel.FrameType, []byte) error, t channel.FrameType, r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 && send(t, buf[:n]) != nil {
			// The host is gone; keep draining so the command does not
			// block on a full pipe before it is killed.
			io.Copy(io.Discard, r)
			return
		}
		if err != nil {
			return
		}
	}
}

// execDetached runs crun exec --detach and reports as podman exec -d does:
// the session's ID, or why the command could not start. The command's
// stdio are a pipe the agent drains for as long as it runs (podman
// discards a detached session's output too); the end of it is crun's
// message when crun fails.
func execDetached(conn net.Conn, cmd *exec.Cmd) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = startChild(cmd)
	w.Close()
	if err != nil {
		r.Close()
		return fmt.Errorf("exec: %w", err)
	}
	tail := &tailWriter{}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		io.Copy(tail, r)
		r.Close()
	}()
	err = waitChild(cmd)
	out := channel.NewStream(conn)
	if err := out.Send(channel.FrameOK, nil); err != nil {
		return nil
	}
	if err == nil {
		return sendSessionID(out)
	}
	code := 125
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	// crun failed, so nothing else holds the pipe: its message is there.
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
	}
	if c, ok := runtimeFailure(code, tail.tail()); ok {
		code = c
	}
	out.Send(channel.FrameStderr, tail.tail())
	return out.Send(channel.FrameExit, channel.Uint32(uint32(code)))
}

// sendSessionID ends a detached exec's stream as podman exec -d does: the
// session's ID on stdout, exit 0.
func sendSessionID(out *channel.Stream) error {
	id := make([]byte, 32)
	rand.Read(id)
	out.Send(channel.FrameStdout, []byte(hex.EncodeToString(id)+"\n"))
	return out.Send(channel.FrameExit, channel.Uint32(0))
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
