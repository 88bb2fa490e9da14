package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
)

// containerName is the one container of the VM, as podman knows it.
const containerName = "fcvm"

// outputLimit bounds unacknowledged container output held in guest memory.
const outputLimit = 8 << 20

// podmanGlobal are podman's global flags in the guest: storage on the ext4
// upper disk (podman's overlay driver refuses an overlayfs root), runtime
// state in tmpfs, no systemd.
func podmanGlobal() []string {
	g := []string{}
	if podmanDebug {
		g = append(g, "--log-level", "debug")
	}
	return append(g,
		"--root", upperMount+"/containers/storage",
		"--runroot", "/run/containers/storage",
		"--cgroup-manager", "cgroupfs",
		"--events-backend", "file",
		"--storage-driver", "overlay",
	)
}

// podmanDebug (fcvm.debug=1 on the kernel command line) makes podman log
// what it does to the container's stderr.
var podmanDebug bool

type container struct {
	out *outputLog
	cmd *exec.Cmd

	// up is closed once the container runs (podman has started its
	// process) or podman has exited; done once podman has exited.
	up   chan struct{}
	done chan struct{}

	mu    sync.Mutex // guards stdin and tty
	stdin io.WriteCloser
	tty   *os.File
}

func (c *container) kill() {
	if c.cmd.Process != nil {
		exec.Command("podman", append(podmanGlobal(), "kill", "--signal", "KILL", containerName)...).Run()
		c.cmd.Process.Kill()
	}
}

// podmanRunArgs turns a plan into podman's arguments.
func podmanRunArgs(p *channel.Plan) ([]string, error) {
	argv := append(append([]string(nil), p.Entrypoint...), p.Cmd...)
	if len(argv) == 0 {
		return nil, errors.New("no command: the image has no entrypoint or cmd; give one after the image name")
	}
	// The agent keeps the output, so podman logs nothing. Without a
	// terminal the container's stdio are the agent's pipes themselves
	// (passthrough): podman's attach copying through conmon costs two
	// thirds of the log throughput under TCG (16 MiB: 6 s vs 2 s).
	// podman refuses passthrough with a terminal.
	logDriver := "passthrough"
	if p.TTY {
		logDriver = "none"
	}
	a := append(podmanGlobal(), "run", "--name", containerName, "--replace",
		"--cidfile", cidFile,
		"--log-driver", logDriver,
		"--security-opt", "label=disable",
	)
	if p.Network != nil {
		a = append(a, "--network", "host")
	} else {
		a = append(a, "--network", "none")
	}
	if p.Hostname != "" {
		a = append(a, "--hostname", p.Hostname)
	}
	for _, e := range p.Env {
		a = append(a, "--env", e)
	}
	if p.Workdir != "" {
		a = append(a, "--workdir", p.Workdir)
	}
	if p.User != "" {
		a = append(a, "--user", p.User)
	}
	for i, v := range p.Volumes {
		a = append(a, "--volume", fmt.Sprintf("/mnt/volumes/%d:%s", i, v.Guest))
	}
	if p.Interactive {
		a = append(a, "--interactive")
	}
	if p.TTY {
		a = append(a, "--tty")
	}
	// --rootfs is a boolean: the first argument after "--" is the root
	// (overlaid, :O, because the image disk is read-only) and the rest is
	// the command, already resolved from entrypoint and cmd on the host.
	a = append(a, "--rootfs", "--", imageMount+":O")
	return append(a, argv...), nil
}

func (a *Agent) start(p *channel.Plan, conn net.Conn) error {
	if p == nil {
		return errors.New("start: no plan")
	}
	c, already, err := a.launch(p)
	if err != nil {
		return err
	}
	if already {
		// Already started (a reconnect): never run it twice.
		return channel.Reply(conn, []byte(`{"already":true}`))
	}
	// Reply once the container runs, so that `fcvm run -d` returns when
	// exec works, as podman's does.
	select {
	case <-c.up:
	case <-time.After(startTimeout):
		a.log.Warn("container not running yet; replying anyway", "after", startTimeout)
	}
	return channel.Reply(conn, nil)
}

// startTimeout bounds how long a start request waits for the container
// to run; the first podman command of a boot under TCG takes seconds.
const startTimeout = 3 * time.Minute

// launch starts podman for p unless a container exists already.
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
	args, err := podmanRunArgs(p)
	if err != nil {
		return nil, false, err
	}
	os.Remove(cidFile)
	reapOnce.Do(func() { go reapConmons() })
	c = &container{out: newOutputLog(outputLimit), up: make(chan struct{}), done: make(chan struct{})}
	c.cmd = exec.Command("podman", args...)
	c.cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var copies sync.WaitGroup
	if p.TTY {
		ptmx, err := pty.StartWithSize(c.cmd, &pty.Winsize{Rows: max(p.Rows, 24), Cols: max(p.Cols, 80)})
		if err != nil {
			return nil, false, fmt.Errorf("start podman: %w", err)
		}
		c.tty = ptmx
		c.stdin = ptmx
		copies.Add(1)
		go func() { defer copies.Done(); pump(c.out, channel.FrameStdout, ptmx) }()
	} else {
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			return nil, false, err
		}
		stderr, err := c.cmd.StderrPipe()
		if err != nil {
			return nil, false, err
		}
		if p.Interactive {
			if c.stdin, err = c.cmd.StdinPipe(); err != nil {
				return nil, false, err
			}
		}
		if err := c.cmd.Start(); err != nil {
			return nil, false, fmt.Errorf("start podman: %w", err)
		}
		copies.Add(2)
		go func() { defer copies.Done(); pump(c.out, channel.FrameStdout, stdout) }()
		go func() { defer copies.Done(); pump(c.out, channel.FrameStderr, stderr) }()
	}
	a.ctr = c
	a.plan = p
	a.log.Info("container started", "args", args)
	go func() {
		copies.Wait()
		err := c.cmd.Wait()
		code := 0
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
				if code < 0 {
					code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
				}
			} else {
				code = 125
				c.out.write(channel.FrameStderr, []byte(fmt.Sprintf("fc-agent: %v\n", err)))
			}
		}
		if c.tty != nil {
			c.tty.Close()
		}
		a.log.Info("container exited", "code", code)
		c.out.exit(code)
		close(c.done)
	}()
	go c.watchRunning(a.log)
	return c, false, nil
}

// cidFile is where podman writes the container's ID.
const cidFile = "/run/fcvm.cid"

// watchRunning closes c.up once the OCI runtime has started the
// container's process, or podman has exited. The runtime's state directory
// says so without running podman (a podman command costs a second under
// TCG): crun and runc both keep an exec.fifo there from create until
// start. podman records the state under the container's lock, which
// podman exec takes too, so an exec that follows sees it running.
func (c *container) watchRunning(log *slog.Logger) {
	defer close(c.up)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-tick.C:
		}
		b, err := os.ReadFile(cidFile)
		id := strings.TrimSpace(string(b))
		if err != nil || id == "" {
			continue
		}
		for _, st := range []string{"/run/crun/" + id + "/status", "/run/runc/" + id + "/state.json"} {
			if _, err := os.Stat(st); err != nil {
				continue
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(st), "exec.fifo")); errors.Is(err, os.ErrNotExist) {
				log.Info("container running", "id", id[:min(12, len(id))])
				return
			}
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

func (a *Agent) container() (*container, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctr == nil {
		return nil, errors.New("container not started")
	}
	return a.ctr, nil
}

// attach streams output from req.From on, then the exit code; it takes
// acks, stdin, resizes and signals from the host.
func (a *Agent) attach(req *channel.AttachRequest, conn net.Conn) error {
	if req == nil {
		return errors.New("attach: no request")
	}
	c, err := a.container()
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
				if sig, err := channel.ParseUint32(f.Payload); err == nil && c.cmd.Process != nil {
					c.cmd.Process.Signal(syscall.Signal(sig))
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

func (a *Agent) signal(sig int, conn net.Conn) error {
	c, err := a.container()
	if err != nil {
		return err
	}
	if exited, _ := c.out.status(); !exited && c.cmd.Process != nil {
		switch s := syscall.Signal(sig); s {
		case syscall.SIGKILL, syscall.SIGSTOP:
			// These end or stop podman run itself rather than reach
			// the container through it: podman kill delivers them.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if out, err := exec.CommandContext(ctx, "podman", append(podmanGlobal(), "kill", "--signal", strconv.Itoa(sig), containerName)...).CombinedOutput(); err != nil {
				return fmt.Errorf("podman kill --signal %d: %w: %s", sig, err, bytes.TrimSpace(out))
			}
		default:
			// podman run proxies signals to the container.
			c.cmd.Process.Signal(s)
		}
	}
	return channel.Reply(conn, nil)
}

func (a *Agent) status(conn net.Conn) error {
	a.mu.Lock()
	st := channel.Status{State: "created", Generation: a.gen}
	c := a.ctr
	a.mu.Unlock()
	if c != nil {
		st.State = "running"
		if exited, code := c.out.status(); exited {
			st.State, st.ExitCode = "exited", code
		}
	}
	b, _ := json.Marshal(st)
	return channel.Reply(conn, b)
}
