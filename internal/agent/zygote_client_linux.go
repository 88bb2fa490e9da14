package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
)

// zygoteClient is the agent's end of a container's zygote (see
// zygote_linux.go).
type zygoteClient struct {
	conn *net.UnixConn
	cmd  *exec.Cmd
	done chan struct{} // closed once the zygote's socket has ended
	dead atomic.Bool   // closed, or its socket has ended

	mu    sync.Mutex // guards calls and next; serialises sends
	calls map[uint64]chan zygoteAnswer
	next  uint64
}

// zygoteAnswer is a reply with the descriptors it carries (a terminal's
// master).
type zygoteAnswer struct {
	zygoteReply
	files []*os.File
}

// zygoteTimeout bounds how long the agent waits for the zygote to set up
// or to start a command before it gives up on it.
const zygoteTimeout = 30 * time.Second

// errNoZygote means the container's settings are ones the zygote does not
// apply: crun runs the command instead.
var errNoZygote = errors.New("the zygote cannot start this container's commands")

// zygoteNamespaces maps the spec's namespaces to setns flags.
var zygoteNamespaces = map[specs.LinuxNamespaceType]uintptr{
	specs.PIDNamespace: unix.CLONE_NEWPID, specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.IPCNamespace: unix.CLONE_NEWIPC, specs.UTSNamespace: unix.CLONE_NEWUTS,
	specs.MountNamespace: unix.CLONE_NEWNS, specs.CgroupNamespace: unix.CLONE_NEWCGROUP,
	specs.TimeNamespace: unix.CLONE_NEWTIME,
}

// cgroupRoot is where the guest mounts cgroup v2.
const cgroupRoot = "/sys/fs/cgroup"

// zygoteSetupFor is the zygote's setup for the container crun runs as
// crunDir describes, with cgroup v2 at cgroups, or errNoZygote.
func zygoteSetupFor(crunDir, cgroups string) (zygoteSetup, error) {
	var s zygoteSetup
	b, err := os.ReadFile(filepath.Join(crunDir, "config.json"))
	if err != nil {
		return s, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return s, fmt.Errorf("read the container's config: %w", err)
	}
	if spec.Process == nil || spec.Linux == nil {
		return s, errNoZygote
	}
	cg := spec.Linux.CgroupsPath
	if _, err := os.Stat(filepath.Join(cgroups, "cgroup.controllers")); err != nil || !strings.HasPrefix(cg, "/") {
		return s, errNoZygote // cgroup v1, or a systemd slice
	}
	s.Cgroup = filepath.Join(cgroups, filepath.Clean(cg))
	for _, ns := range spec.Linux.Namespaces {
		flag, ok := zygoteNamespaces[ns.Type]
		if !ok {
			return s, errNoZygote // a user namespace
		}
		s.Namespaces |= flag
	}
	s.Rlimits = spec.Process.Rlimits
	s.OOMScoreAdj = spec.Process.OOMScoreAdj
	if sc := spec.Linux.Seccomp; sc != nil {
		if len(sc.Flags) > 0 || sc.ListenerPath != "" {
			return s, errNoZygote
		}
		// The filter crun compiled and installed in the container: the
		// zygote installs the very same program.
		if s.Seccomp, err = readBounded(filepath.Join(crunDir, "seccomp.bpf"), 1<<20); err != nil {
			return s, fmt.Errorf("the container's seccomp filter: %w", err)
		}
	}
	return s, nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("%s: more than %d bytes", path, limit)
	}
	return b, err
}

// startZygote starts a zygote for the container crun runs as crunDir
// describes, whose init is initPid.
func startZygote(log *slog.Logger, crunDir, cgroups string, initPid int) (*zygoteClient, error) {
	setup, err := zygoteSetupFor(crunDir, cgroups)
	if err != nil {
		return nil, err
	}
	pidfd, err := unix.PidfdOpen(initPid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd of the container's init: %w", err)
	}
	pidf := os.NewFile(uintptr(pidfd), "pidfd")
	defer pidf.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("zygote socket: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "zygote"), os.NewFile(uintptr(fds[1]), "zygote")
	defer theirs.Close()
	fc, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, fmt.Errorf("zygote socket: %w", err)
	}
	z := &zygoteClient{conn: fc.(*net.UnixConn), done: make(chan struct{}), calls: map[uint64]chan zygoteAnswer{}}
	z.cmd = exec.Command("/proc/self/exe", zygoteArg)
	z.cmd.Args[0] = "fc-agent"
	z.cmd.ExtraFiles = []*os.File{theirs}
	z.cmd.Stderr = os.Stderr // the console
	if err := startChild(z.cmd); err != nil {
		z.conn.Close()
		return nil, fmt.Errorf("start zygote: %w", err)
	}
	go func() {
		err := waitChild(z.cmd)
		log.Debug("zygote exited", "err", err)
		z.conn.Close()
	}()
	z.conn.SetDeadline(time.Now().Add(zygoteTimeout))
	buf := make([]byte, zygoteMaxMsg)
	var ready zygoteReply
	if err := writeZygoteMsg(z.conn, setup, []*os.File{pidf}); err != nil {
		z.close()
		return nil, fmt.Errorf("zygote setup: %w", err)
	}
	if files, err := readZygoteMsg(z.conn, buf, &ready); err != nil {
		z.close()
		return nil, fmt.Errorf("zygote setup: %w (its error is on the console)", err)
	} else {
		closeFiles(files)
	}
	z.conn.SetDeadline(time.Time{})
	go z.read(buf)
	return z, nil
}

// read delivers the zygote's replies until its socket ends.
func (z *zygoteClient) read(buf []byte) {
	defer close(z.done)
	defer z.dead.Store(true)
	for {
		var r zygoteReply
		files, err := readZygoteMsg(z.conn, buf, &r)
		if err != nil {
			closeFiles(files)
			return
		}
		z.mu.Lock()
		ch, ok := z.calls[r.ID]
		if ok && (r.Exited || r.Err != "") {
			delete(z.calls, r.ID)
		}
		z.mu.Unlock()
		sent := false
		if ok {
			select {
			case ch <- zygoteAnswer{r, files}:
				sent = true
			default: // a reply the request did not ask for
			}
		}
		if !sent {
			closeFiles(files)
		}
	}
}

// close ends the zygote; commands it started go on.
func (z *zygoteClient) close() {
	z.dead.Store(true)
	z.conn.Close()
	if z.cmd.Process != nil {
		z.cmd.Process.Kill()
	}
}

// alive reports whether the zygote still answers.
func (z *zygoteClient) alive() bool { return !z.dead.Load() }

// errZygoteLost is a zygote gone before it reported on a command.
var errZygoteLost = errors.New("exec: the container's zygote exited")

// start asks the zygote to start req with files as its stdin, stdout and
// stderr (none for a terminal). It returns the zygote's first reply
// (started, with a terminal's master, or could not start) and a channel
// that gets the exit.
func (z *zygoteClient) start(req zygoteRequest, files []*os.File) (zygoteAnswer, <-chan zygoteAnswer, error) {
	ch := make(chan zygoteAnswer, 2)
	z.mu.Lock()
	z.next++
	req.ID = z.next
	z.calls[req.ID] = ch
	err := writeZygoteMsg(z.conn, req, files)
	z.mu.Unlock()
	forget := func() {
		z.mu.Lock()
		delete(z.calls, req.ID)
		z.mu.Unlock()
	}
	if err != nil {
		// A zygote killed (from the VM) before its socket's end was
		// noticed: start another.
		forget()
		z.close()
		return zygoteAnswer{}, nil, errZygoteLost
	}
	select {
	case r := <-ch:
		return r, ch, nil
	case <-z.done:
		forget()
		return zygoteAnswer{}, nil, errZygoteLost
	case <-time.After(zygoteTimeout):
		// A zygote that cannot start a command in that long is wedged
		// (a frozen cgroup): crun takes over from now on.
		forget()
		z.close()
		return zygoteAnswer{}, nil, errZygoteLost
	}
}

// zygoteRequestFor is the zygote's request for proc (the container's
// process spec as execProcess made it), or errNoZygote for settings only
// crun applies.
func zygoteRequestFor(proc []byte) (zygoteRequest, error) {
	var p specs.Process
	if err := json.Unmarshal(proc, &p); err != nil {
		return zygoteRequest{}, fmt.Errorf("exec process: %w", err)
	}
	if p.ApparmorProfile != "" || p.SelinuxLabel != "" || p.IOPriority != nil ||
		p.Scheduler != nil || p.ExecCPUAffinity != nil || p.Capabilities == nil {
		return zygoteRequest{}, errNoZygote
	}
	r := zygoteRequest{
		Args: p.Args, Env: p.Env, Cwd: p.Cwd,
		UID: p.User.UID, GID: p.User.GID, Groups: p.User.AdditionalGids, Umask: p.User.Umask,
		Caps: *p.Capabilities, NoNewPrivileges: p.NoNewPrivileges,
		Terminal: p.Terminal,
	}
	if p.ConsoleSize != nil {
		r.Rows, r.Cols = uint16(p.ConsoleSize.Height), uint16(p.ConsoleSize.Width)
	}
	if b, _ := json.Marshal(r); len(b) > zygoteMaxMsg-1024 {
		return zygoteRequest{}, errNoZygote
	}
	return r, nil
}

// zygote returns the container's zygote, starting one if there is none
// (or the last one died), or nil when crun must run the container's
// commands.
func (c *container) zygote(log *slog.Logger) *zygoteClient {
	c.zmu.Lock()
	defer c.zmu.Unlock()
	if c.zyg != nil && c.zyg.alive() {
		return c.zyg
	}
	if c.zygErr != nil {
		return nil
	}
	select {
	case <-c.done:
		return nil
	default:
	}
	pid, err := containerPID()
	if err == nil {
		c.zyg, err = startZygote(log, filepath.Join(runtimeStateDir, containerName), cgroupRoot, pid)
	}
	if err != nil {
		log.Info("commands in the container go through crun", "why", err)
		c.zyg = nil
		if errors.Is(err, errNoZygote) {
			c.zygErr = err
		}
		return nil
	}
	return c.zyg
}

// closeZygote ends the container's zygote, for good.
func (c *container) closeZygote() {
	c.zmu.Lock()
	defer c.zmu.Unlock()
	if c.zyg != nil {
		c.zyg.close()
	}
	c.zygErr = errors.New("the container has exited")
}

// execZygote runs req in the container through its zygote, streaming its
// stdio as frames, as exec does through crun. errZygoteLost, returned
// before anything is sent on conn, means crun should run it instead.
func (a *Agent) execZygote(conn net.Conn, req *channel.ExecRequest, z *zygoteClient, zr zygoteRequest, marker string) error {
	var ends []*os.File // every descriptor of ours, closed on return
	defer func() { closeFiles(ends) }()
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			ends = append(ends, r, w)
		}
		return r, w, err
	}
	var stdoutR, stderrR, stdinW *os.File
	var files []*os.File // the command's stdin, stdout, stderr
	if !zr.Terminal {
		var stdinR, stdoutW, stderrW *os.File
		var err error
		if stdoutR, stdoutW, err = pipe(); err != nil {
			return err
		}
		if stderrR, stderrW, err = pipe(); err != nil {
			return err
		}
		if req.Stdin {
			if stdinR, stdinW, err = pipe(); err != nil {
				return err
			}
		} else {
			if stdinR, err = os.Open(os.DevNull); err != nil {
				return err
			}
			ends = append(ends, stdinR)
		}
		files = []*os.File{stdinR, stdoutW, stderrW}
	}
	first, exited, err := z.start(zr, files)
	// The command holds its own ends now: EOF on its output comes when
	// it (and whatever it started) closes them.
	closeFiles(files)
	if err != nil {
		return err
	}
	out := channel.NewStream(conn)
	if first.Err != "" {
		closeFiles(first.files)
		if err := out.Send(channel.FrameOK, nil); err != nil {
			return nil
		}
		out.Send(channel.FrameStderr, []byte(first.Err+"\n"))
		return out.Send(channel.FrameExit, channel.Uint32(uint32(first.Code)))
	}
	proc := &execProc{marker: marker, pgid: first.Pid, done: make(chan struct{})}
	var tty *os.File
	if zr.Terminal {
		if len(first.files) != 1 {
			closeFiles(first.files)
			proc.signal(unix.SIGKILL)
			return errors.New("exec terminal: the zygote sent no terminal")
		}
		// A file made non-blocking before os.NewFile goes through the
		// poller, so its reads take deadlines.
		fd, err := unix.FcntlInt(first.files[0].Fd(), unix.F_DUPFD_CLOEXEC, 0)
		first.files[0].Close()
		if err == nil {
			err = unix.SetNonblock(fd, true)
		}
		if err != nil {
			proc.signal(unix.SIGKILL)
			return fmt.Errorf("exec terminal: %w", err)
		}
		tty = os.NewFile(uintptr(fd), "pty")
		ends = append(ends, tty)
	}
	if req.Detach {
		// podman discards a detached session's output: drain it for as
		// long as the command runs, and forget the exit.
		drain := []*os.File{stdoutR, stderrR}
		ends = nil
		if stdinW != nil {
			stdinW.Close()
		}
		go func() {
			for _, r := range drain {
				go func() { io.Copy(io.Discard, r); r.Close() }()
			}
			select {
			case <-exited:
			case <-z.done:
			}
		}()
		if err := out.Send(channel.FrameOK, nil); err != nil {
			return nil
		}
		return sendSessionID(out)
	}
	var outputs sync.WaitGroup
	copyOut := func(t channel.FrameType, r io.Reader) {
		outputs.Add(1)
		go func() { defer outputs.Done(); copyFrames(out.Send, t, r) }()
	}
	var stdin io.WriteCloser
	if tty != nil {
		copyOut(channel.FrameStdout, tty)
		stdin = tty
	} else {
		copyOut(channel.FrameStdout, stdoutR)
		copyOut(channel.FrameStderr, stderrR)
		if stdinW != nil {
			stdin = stdinW
		}
	}
	if err := out.Send(channel.FrameOK, nil); err != nil {
		proc.signal(unix.SIGKILL)
	}
	go a.execInput(conn, proc, stdin, tty)
	if tty == nil {
		outputs.Wait()
	}
	var r zygoteAnswer
	select {
	case r = <-exited:
	case <-z.done:
		close(proc.done)
		return out.Send(channel.FrameError, []byte(errZygoteLost.Error()+" before the command did: its exit code is lost"))
	}
	close(proc.done)
	if tty != nil {
		// The pty's output ends with the last process holding it, which
		// may outlive the command (a background job): do not wait for
		// more than what is already there.
		tty.SetReadDeadline(time.Now().Add(2 * time.Second))
		outputs.Wait()
	}
	return out.Send(channel.FrameExit, channel.Uint32(uint32(r.Code)))
}
