package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
)

// containerName is the one container of the VM, as crun knows it.
const containerName = "fcvm"

// outputLimit bounds unacknowledged container output held in guest memory.
const outputLimit = 8 << 20

type container struct {
	// name is the container's name for crun (containerName, or a pod
	// member's), bundle its OCI bundle and pidFile where crun writes its
	// init's PID.
	name, bundle, pidFile string

	out *outputLog
	cmd *exec.Cmd // crun run

	// up is closed once the container runs (crun has started its
	// process) or crun has exited; done once crun has exited.
	up   chan struct{}
	done chan struct{}

	mu    sync.Mutex // guards stdin and tty
	stdin io.WriteCloser
	tty   *os.File

	zmu    sync.Mutex // guards zyg and zygErr
	zyg    *zygoteClient
	zygErr error // why there is no zygote, for good
}

// kill ends the container: its init, and with it its PID namespace.
func (c *container) kill() {
	if pid, err := c.pid(); err == nil {
		unix.Kill(pid, unix.SIGKILL)
	}
}

// pid is the container's init, from crun's state.
func (c *container) pid() (int, error) { return crunPID(c.name) }

func (a *Agent) start(p *channel.Plan, conn net.Conn) error {
	if p == nil {
		return errors.New("start: no plan")
	}
	c, already, err := a.launch(p)
	if err != nil {
		return err
	}
	return a.replyStarted(c, already, conn)
}

// replyStarted answers a start: at once for a container started already
// (a reconnect: it never runs twice), else once it runs, so that `fcvm
// run -d` returns when exec works, as podman's does.
func (a *Agent) replyStarted(c *container, already bool, conn net.Conn) error {
	if already {
		return channel.Reply(conn, []byte(`{"already":true}`))
	}
	select {
	case <-c.up:
	case <-time.After(startTimeout):
		a.log.Warn("container not running yet; replying anyway", "container", c.name, "after", startTimeout)
	}
	return channel.Reply(conn, nil)
}

// startTimeout bounds how long a start request waits for the container
// to run: generous, for a loaded TCG guest.
const startTimeout = 3 * time.Minute

// launch starts the container for p with crun unless a container exists
// already.
func (a *Agent) launch(p *channel.Plan) (c *container, already bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctr != nil {
		return a.ctr, true, nil
	}
	if p.ClockUnixNano != 0 {
		tv := unix.NsecToTimeval(p.ClockUnixNano)
		unix.Settimeofday(&tv)
	}
	if p.Hostname != "" {
		unix.Sethostname([]byte(p.Hostname))
	}
	if err := a.setupNetwork(p.Network); err != nil {
		return nil, false, err
	}
	if err := a.mountVolumes(p.Volumes); err != nil {
		return nil, false, err
	}
	if err := writeBundle(p, mainBundle); err != nil {
		return nil, false, err
	}
	c = newContainer(containerName, bundleDir, pidFile)
	if err := a.runCrun(c, p); err != nil {
		return nil, false, err
	}
	a.ctr = c
	a.plan = p
	a.log.Info("container started", "entrypoint", p.Entrypoint, "cmd", p.Cmd)
	return c, false, nil
}

func newContainer(name, bundle, pidFile string) *container {
	return &container{name: name, bundle: bundle, pidFile: pidFile,
		out: newOutputLog(outputLimit), up: make(chan struct{}), done: make(chan struct{})}
}

// runCrun runs c's bundle with crun: its output goes into c.out, its exit
// closes c.done, and c.up is closed once it runs.
func (a *Agent) runCrun(c *container, p *channel.Plan) (err error) {
	args := []string{"run", "--bundle", c.bundle, "--pid-file", c.pidFile}
	var console *consoleSocket
	if p.TTY {
		if console, err = newConsoleSocket(filepath.Join(c.bundle, "console.sock")); err != nil {
			return err
		}
		defer console.Close()
		args = append(args, "--console-socket", console.path)
	}
	c.cmd = exec.Command("crun", append(args, c.name)...)
	c.cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Without a terminal the container's stdio are crun's: the agent's
	// pipes. With one, crun's own stdio carry only its errors.
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if p.Interactive && !p.TTY {
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			return err
		}
	}
	errTail := &tailWriter{}
	if err := startChild(c.cmd); err != nil {
		return fmt.Errorf("start crun: %w", err)
	}
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); pump(c.out, channel.FrameStdout, stdout) }()
	go func() { defer pipes.Done(); pump(c.out, channel.FrameStderr, io.TeeReader(stderr, errTail)) }()
	crunDone := make(chan struct{}) // crun has closed its stdio: it has exited
	go func() { pipes.Wait(); close(crunDone) }()
	ttyDone := make(chan struct{})
	if console == nil {
		close(ttyDone)
	} else {
		ptmx, err := console.receive(crunDone, startTimeout)
		if err != nil {
			c.kill()
			c.cmd.Process.Kill()
			<-crunDone
			waitChild(c.cmd)
			return fmt.Errorf("container terminal: %w: %s", err, bytes.TrimSpace(errTail.tail()))
		}
		c.tty, c.stdin = ptmx, ptmx
		go func() { defer close(ttyDone); pump(c.out, channel.FrameStdout, ptmx) }()
	}
	go func() {
		<-crunDone
		err := waitChild(c.cmd)
		code := 0
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
				if code < 0 {
					code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
				}
				if rc, ok := runtimeFailure(code, errTail.tail()); ok {
					code = rc
				} else if _, err := os.Stat(c.pidFile); code == 1 && err != nil {
					// crun failed before there was a container
					// (its message is on stderr): podman's code for
					// an OCI runtime error.
					code = 126
				}
			} else {
				code = 125
				c.out.write(channel.FrameStderr, []byte(fmt.Sprintf("fc-agent: %v\n", err)))
			}
		}
		if c.tty != nil {
			// The terminal's output ends with the last process holding
			// it, which may outlive the main one: take what is there.
			c.tty.SetReadDeadline(time.Now().Add(2 * time.Second))
			<-ttyDone
			c.tty.Close()
		}
		c.closeZygote()
		a.log.Info("container exited", "container", c.name, "code", code)
		c.out.exit(code)
		close(c.done)
	}()
	go c.watchRunning(a.log)
	return nil
}

// watchRunning closes c.up once crun has started the container's process,
// or crun has exited: crun keeps an exec.fifo in its state directory from
// create until start.
func (c *container) watchRunning(log *slog.Logger) {
	defer close(c.up)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	state := filepath.Join(runtimeStateDir, c.name)
	for {
		select {
		case <-c.done:
			return
		case <-tick.C:
		}
		if _, err := os.Stat(filepath.Join(state, "status")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(state, "exec.fifo")); errors.Is(err, os.ErrNotExist) {
			log.Info("container running", "container", c.name)
			if c.name != containerName {
				return // pod members exec through crun
			}
			// Warm the zygote, so that the first exec is as fast as
			// the next ones; not at once, so that a container that
			// only runs a command and exits does not pay for it.
			go func() {
				select {
				case <-c.done:
				case <-time.After(250 * time.Millisecond):
					c.zygote(log)
				}
			}()
			return
		}
	}
}

func pump(out *outputLog, stream channel.FrameType, r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		out.write(stream, buf[:n])
		if err != nil {
			return
		}
	}
}

func (a *Agent) container() (*container, error) { return a.containerOf("") }

// containerOf is the VM's container ("") or the pod member name.
func (a *Agent) containerOf(name string) (*container, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if name != "" {
		if m := a.members[name]; m != nil {
			return m.c, nil
		}
		return nil, fmt.Errorf("no pod member %q in this VM", name)
	}
	if a.ctr == nil {
		return nil, errors.New("container not started")
	}
	return a.ctr, nil
}

// attach streams output from req.From on, then the exit code; it takes
// acks, stdin, resizes and signals from the host.
func (a *Agent) attach(name string, req *channel.AttachRequest, conn net.Conn) error {
	if req == nil {
		return errors.New("attach: no request")
	}
	c, err := a.containerOf(name)
	if err != nil {
		return err
	}
	if err := channel.Reply(conn, nil); err != nil {
		return nil
	}
	stop := make(chan struct{})
	go func() {
		defer close(stop)
		defer c.out.wake()
		for {
			f, err := channel.ReadFrame(conn)
			if err != nil {
				return
			}
			switch f.Type {
			case channel.FrameAck:
				if seq, err := channel.ParseUint64(f.Payload); err == nil {
					c.out.ack(seq)
				}
			case channel.FrameStdin:
				c.mu.Lock()
				if c.stdin != nil {
					c.stdin.Write(f.Payload)
				}
				c.mu.Unlock()
			case channel.FrameStdinEOF:
				c.mu.Lock()
				if c.stdin != nil && c.tty == nil {
					c.stdin.Close()
					c.stdin = nil
				}
				c.mu.Unlock()
			case channel.FrameResize:
				if rows, cols, err := channel.ParseResize(f.Payload); err == nil && c.tty != nil {
					pty.Setsize(c.tty, &pty.Winsize{Rows: rows, Cols: cols})
				}
			case channel.FrameSignal:
				if sig, err := channel.ParseUint32(f.Payload); err == nil {
					if pid, err := c.pid(); err == nil {
						unix.Kill(pid, syscall.Signal(sig))
					}
				}
			}
		}
	}()
	from := req.From
	if from == 0 {
		from = 1
	}
	for {
		ch, done, stopped := c.out.nextFrom(from, stop)
		if stopped {
			return nil
		}
		if done {
			_, code := c.out.status()
			channel.WriteFrame(conn, channel.FrameExit, channel.Uint32(uint32(code)))
			// Wait for the host to ack the exit (it closes the stream).
			select {
			case <-stop:
			case <-time.After(time.Minute):
			}
			return nil
		}
		if err := channel.WriteFrame(conn, ch.stream, channel.EncodeOutput(ch.seq, ch.data)); err != nil {
			return nil
		}
		from = ch.seq + 1
	}
}

// signal delivers sig to the container's main process, as podman kill
// does; SIGKILL and SIGSTOP reach it like any other.
func (a *Agent) signal(name string, sig int, conn net.Conn) error {
	c, err := a.containerOf(name)
	if err != nil {
		return err
	}
	if exited, _ := c.out.status(); !exited {
		select {
		case <-c.up:
		case <-time.After(startTimeout):
		}
		if pid, err := c.pid(); err == nil {
			if err := unix.Kill(pid, syscall.Signal(sig)); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("signal %d to the container: %w", sig, err)
			}
		}
	}
	return channel.Reply(conn, nil)
}

func (a *Agent) status(name string, conn net.Conn) error {
	a.mu.Lock()
	st := channel.Status{State: "created", Generation: a.gen}
	c := a.ctr
	a.mu.Unlock()
	if name != "" {
		var err error
		if c, err = a.containerOf(name); err != nil {
			return err
		}
	}
	if c != nil {
		st.State = "running"
		if exited, code := c.out.status(); exited {
			st.State, st.ExitCode = "exited", code
		}
	}
	b, _ := json.Marshal(st)
	return channel.Reply(conn, b)
}
