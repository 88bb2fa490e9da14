package agent

// The zygote: exec into the container without an OCI runtime per command.
//
// crun exec costs about 130 ms a command under TCG (loading crun and its
// libraries, parsing the container's config), most of an exec's round
// trip. The zygote is fc-agent itself, started once per container, that
// already stands where crun exec puts a command at the process level: in
// the container's cgroup, with its rlimits and oom_score_adj. For each
// command it enters the container on a fresh OS thread (namespaces, user
// and groups, capabilities, no_new_privs, seccomp and umask are all
// per-thread state on Linux, once the thread has its own fs_struct) and
// forks the command from that thread, which inherits exactly that state.
// The thread is then thrown away (its goroutine ends still locked to it),
// so no other goroutine ever runs in the container's namespaces or with
// its credentials, and the Go runtime never spawns threads from it.
//
// The zygote lives outside the container's PID namespace, so nothing in
// the container can see, signal or trace it. It takes requests only from
// the agent, over a socket pair it inherits.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// zygoteArg is the argument that makes fc-agent a zygote.
const zygoteArg = "zygote"

// zygoteMaxMsg bounds one message on the zygote's socket (a request
// carries a command line and an environment; the setup a seccomp filter).
// A message is one datagram of a SOCK_SEQPACKET pair, which the socket's
// send buffer (about 200 KiB by default) bounds too; a bigger request goes
// through crun instead.
const zygoteMaxMsg = 128 << 10

// zygoteSetup is the container-wide state the zygote takes on once: what
// crun applies to the process it execs, at the process level.
type zygoteSetup struct {
	// Cgroup is the container's cgroup directory (cgroup v2).
	Cgroup      string              `json:"cgroup"`
	Rlimits     []specs.POSIXRlimit `json:"rlimits,omitempty"`
	OOMScoreAdj *int                `json:"oomScoreAdj,omitempty"`
	// Namespaces are the CLONE_NEW* flags of the namespaces to join, those
	// of the container's init (whose pidfd comes with the setup).
	Namespaces uintptr `json:"namespaces"`
	// Seccomp is the filter crun compiled for the container (a
	// sock_filter array), empty for none.
	Seccomp []byte `json:"seccomp,omitempty"`
}

// zygoteRequest is one command to start: the process spec's fields that
// differ per command, resolved by the agent. Its stdin, stdout and stderr
// come with it.
type zygoteRequest struct {
	ID   uint64   `json:"id"`
	Args []string `json:"args"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`

	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
	Umask  *uint32  `json:"umask,omitempty"`

	Caps            specs.LinuxCapabilities `json:"caps"`
	NoNewPrivileges bool                    `json:"noNewPrivileges,omitempty"`

	// Terminal asks for a pty, made in the container's devpts as crun
	// makes one; its master comes back with the started reply.
	Terminal bool   `json:"terminal,omitempty"`
	Rows     uint16 `json:"rows,omitempty"`
	Cols     uint16 `json:"cols,omitempty"`
}

// zygoteReply reports on a request: started (Pid), could not start (Err,
// with the exit code podman gives: 127 not found, 126 not executable, 255
// otherwise), or exited (Exited, with the code, 128+N for signal N).
type zygoteReply struct {
	ID     uint64 `json:"id"`
	Pid    int    `json:"pid,omitempty"`
	Err    string `json:"err,omitempty"`
	Exited bool   `json:"exited,omitempty"`
	Code   int    `json:"code"`
}

// Zygote is fc-agent's entry point as a zygote: fd 3 is its socket to the
// agent. It returns when the agent closes the socket.
func Zygote() error {
	f := os.NewFile(3, "zygote")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("zygote socket: %w", err)
	}
	conn, ok := fc.(*net.UnixConn)
	if !ok {
		return errors.New("zygote socket: not a unix socket")
	}
	buf := make([]byte, zygoteMaxMsg)
	var setup zygoteSetup
	fds, err := readZygoteMsg(conn, buf, &setup)
	if err != nil {
		return fmt.Errorf("zygote setup: %w", err)
	}
	if len(fds) != 1 {
		closeFiles(fds)
		return fmt.Errorf("zygote setup: %d descriptors, want the container's pidfd", len(fds))
	}
	z := &zygoteServer{conn: conn, setup: setup, pidfd: fds[0]}
	if err := z.prepare(); err != nil {
		return fmt.Errorf("zygote setup: %w", err)
	}
	if err := writeZygoteMsg(conn, zygoteReply{}, nil); err != nil {
		return err
	}
	for {
		var req zygoteRequest
		files, err := readZygoteMsg(conn, buf, &req)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		go z.run(req, files)
	}
}

type zygoteServer struct {
	conn      *net.UnixConn
	setup     zygoteSetup
	pidfd     *os.File // the container's init
	filter    []unix.SockFilter
	lastCap   capability.Cap
	capByName map[string]capability.Cap // "CAP_CHOWN"...
}

// prepare takes on the container's process-level state.
func (z *zygoteServer) prepare() error {
	procs, err := os.OpenFile(filepath.Join(z.setup.Cgroup, "cgroup.procs"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = procs.WriteString(strconv.Itoa(os.Getpid()))
	procs.Close()
	if err != nil {
		return fmt.Errorf("join cgroup %s: %w", z.setup.Cgroup, err)
	}
	for _, l := range z.setup.Rlimits {
		r, ok := rlimitTypes[l.Type]
		if !ok {
			return fmt.Errorf("rlimit %s: unknown", l.Type)
		}
		// syscall.Setrlimit, not unix's: it also tells the Go runtime not
		// to put back its own RLIMIT_NOFILE in the children it forks.
		if err := syscall.Setrlimit(r, &syscall.Rlimit{Cur: l.Soft, Max: l.Hard}); err != nil {
			return fmt.Errorf("rlimit %s: %w", l.Type, err)
		}
	}
	if z.setup.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*z.setup.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("oom_score_adj: %w", err)
		}
	}
	if n := len(z.setup.Seccomp); n > 0 {
		if n%int(unsafe.Sizeof(unix.SockFilter{})) != 0 || n/8 > 0xffff {
			return fmt.Errorf("seccomp filter: %d bytes is not a BPF program", n)
		}
		z.filter = unsafe.Slice((*unix.SockFilter)(unsafe.Pointer(&z.setup.Seccomp[0])), n/8)
	}
	// The os package checks once, by forking a child, that pidfds work;
	// have it done now rather than by the first command's fork, from
	// inside the container's PID namespace.
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		p.Release()
	}
	z.lastCap, err = capability.LastCap()
	if err != nil {
		return err
	}
	z.capByName = map[string]capability.Cap{}
	for _, c := range capability.ListKnown() {
		z.capByName["CAP_"+strings.ToUpper(c.String())] = c
	}
	return nil
}

var rlimitTypes = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// run starts one command and reports its start and its exit.
func (z *zygoteServer) run(req zygoteRequest, files []*os.File) {
	type started struct {
		p      *os.Process
		master *os.File
		err    error
	}
	ch := make(chan started, 1)
	go func() {
		// Never unlocked: the thread is the container's once entered, and
		// dies with this goroutine.
		runtime.LockOSThread()
		p, master, err := z.enterAndStart(&req, files)
		ch <- started{p, master, err}
	}()
	s := <-ch
	closeFiles(files)
	if s.err != nil {
		code := 255
		var se *startError
		if errors.As(s.err, &se) {
			code = se.code
		}
		writeZygoteMsg(z.conn, zygoteReply{ID: req.ID, Err: s.err.Error(), Code: code}, nil)
		return
	}
	var master []*os.File
	if s.master != nil {
		master = []*os.File{s.master}
	}
	writeZygoteMsg(z.conn, zygoteReply{ID: req.ID, Pid: s.p.Pid}, master)
	closeFiles(master)
	st, err := s.p.Wait()
	code := 255
	if err == nil {
		ws := st.Sys().(syscall.WaitStatus)
		code = ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	writeZygoteMsg(z.conn, zygoteReply{ID: req.ID, Exited: true, Code: code}, nil)
}

// startError is a command that could not start, with podman's exit code
// for it and crun's message.
type startError struct {
	code int
	msg  string
}

func (e *startError) Error() string { return e.msg }

// enterAndStart turns the calling thread into the container's, as crun
// exec would its child, and forks the command from it, with files as its
// stdio or, for a terminal, a pty whose master it returns. The caller has
// locked the thread and never unlocks it.
func (z *zygoteServer) enterAndStart(req *zygoteRequest, files []*os.File) (*os.Process, *os.File, error) {
	p, master, err := z.enterAndStartErr(req, files)
	if err != nil && master != nil {
		master.Close()
		master = nil
	}
	return p, master, err
}

func (z *zygoteServer) enterAndStartErr(req *zygoteRequest, files []*os.File) (p *os.Process, master *os.File, err error) {
	if len(req.Args) == 0 {
		return nil, nil, errors.New("no command")
	}
	if req.Terminal != (len(files) == 0) {
		return nil, nil, errors.New("want stdio or a terminal, not both")
	}
	// setns into a mount namespace needs an fs_struct of the thread's own.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, nil, fmt.Errorf("unshare fs: %w", err)
	}
	if err := unix.Setns(int(z.pidfd.Fd()), int(z.setup.Namespaces)); err != nil {
		return nil, nil, fmt.Errorf("join the container's namespaces: %w", err)
	}
	bounding, err := z.capMask(req.Caps.Bounding)
	if err != nil {
		return nil, nil, err
	}
	for c := capability.Cap(0); c <= z.lastCap; c++ {
		if bounding&(1<<c) == 0 {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				return nil, nil, fmt.Errorf("drop %s from the bounding set: %w", c, err)
			}
		}
	}
	// Without no_new_privs, loading a filter takes CAP_SYS_ADMIN, so it
	// goes on before the capabilities go (crun's order too); the calls
	// after it are ones every container profile allows.
	if !req.NoNewPrivileges {
		if err := z.loadSeccomp(); err != nil {
			return nil, nil, err
		}
	}
	if err := setCreds(req); err != nil {
		return nil, nil, err
	}
	if err := z.setCaps(req.Caps); err != nil {
		return nil, nil, err
	}
	if req.Umask != nil {
		unix.Umask(int(*req.Umask))
	}
	if req.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return nil, nil, fmt.Errorf("no_new_privs: %w", err)
		}
		if err := z.loadSeccomp(); err != nil {
			return nil, nil, err
		}
	}
	// From here on the thread is the container's: paths resolve in its
	// mount namespace, with the command's user.
	// Every command leads a session of its own, so that its process
	// group takes a signal as one: a child it is forking right then
	// included, which a scan of /proc would miss (execProc.signal).
	attr := &os.ProcAttr{Dir: req.Cwd, Env: req.Env, Files: files, Sys: &syscall.SysProcAttr{Setsid: true}}
	if req.Terminal {
		var slave *os.File
		if master, slave, err = openPty(req.Rows, req.Cols); err != nil {
			return nil, nil, err
		}
		defer slave.Close()
		attr.Files = []*os.File{slave, slave, slave}
		attr.Sys = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	}
	path, err := lookPath(req.Args[0], req.Env)
	if err != nil {
		return nil, master, err
	}
	// The child's chdir failing would read as its exec failing: look
	// first, as os.StartProcess does itself only without SysProcAttr.
	if req.Cwd != "" {
		if _, err := os.Stat(req.Cwd); err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, master, &startError{255, fmt.Sprintf("chdir `%s`: %s", req.Cwd, errnoText(err))}
		}
	}
	p, err = os.StartProcess(path, req.Args, attr)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, master, &startError{127, fmt.Sprintf("executable file `%s` not found in $PATH: No such file or directory", req.Args[0])}
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, master, &startError{126, "open executable: Permission denied"}
		}
		return nil, master, &startError{126, fmt.Sprintf("exec `%s`: %s", req.Args[0], errnoText(err))}
	}
	return p, master, nil
}

// openPty makes a pty in the devpts of the thread's mount namespace, as
// the thread's user (who then owns the slave), sized rows x cols. The
// slave is opened from the master (TIOCGPTPEER), never by a path the
// container could have replaced; a /dev/ptmx that is not a pty
// multiplexer fails the unlock.
func openPty(rows, cols uint16) (master, slave *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open the container's /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("the container's /dev/ptmx is not a pty multiplexer: %w", err)
	}
	sfd, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if e != 0 {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("open the pty's slave: %w", e)
	}
	if rows > 0 && cols > 0 {
		unix.IoctlSetWinsize(mfd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}
	return os.NewFile(uintptr(mfd), "ptmx"), os.NewFile(sfd, "pts"), nil
}

// errnoText is an error's errno as strerror words it ("No such file or
// directory"), as crun reports them.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		s := errno.Error()
		return strings.ToUpper(s[:1]) + s[1:]
	}
	return err.Error()
}

// setCreds sets the thread's groups, gid and uid. These are raw system
// calls on purpose: Go's syscall.Setuid and friends change every thread of
// the process.
func setCreds(req *zygoteRequest) error {
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("keepcaps: %w", err)
	}
	var groups unsafe.Pointer
	if len(req.Groups) > 0 {
		groups = unsafe.Pointer(&req.Groups[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(req.Groups)), uintptr(groups), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(req.GID), uintptr(req.GID), uintptr(req.GID)); e != 0 {
		return fmt.Errorf("setgid %d: %w", req.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(req.UID), uintptr(req.UID), uintptr(req.UID)); e != 0 {
		return fmt.Errorf("setuid %d: %w", req.UID, e)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("keepcaps: %w", err)
	}
	return nil
}

// setCaps sets the thread's effective, permitted, inheritable and ambient
// sets to the spec's.
func (z *zygoteServer) setCaps(c specs.LinuxCapabilities) error {
	var sets [3]uint64
	for i, names := range [][]string{c.Effective, c.Permitted, c.Inheritable} {
		m, err := z.capMask(names)
		if err != nil {
			return err
		}
		sets[i] = m
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(sets[0]), Permitted: uint32(sets[1]), Inheritable: uint32(sets[2])},
		{Effective: uint32(sets[0] >> 32), Permitted: uint32(sets[1] >> 32), Inheritable: uint32(sets[2] >> 32)},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for _, name := range c.Ambient {
		cp, ok := z.capByName[name]
		if !ok {
			return fmt.Errorf("capability %s: unknown", name)
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(cp), 0, 0); err != nil {
			return fmt.Errorf("raise ambient %s: %w", name, err)
		}
	}
	return nil
}

// capMask is the bit mask of names; a capability this kernel does not
// know is left out, as crun does.
func (z *zygoteServer) capMask(names []string) (uint64, error) {
	var m uint64
	for _, name := range names {
		c, ok := z.capByName[name]
		if !ok {
			return 0, fmt.Errorf("capability %s: unknown", name)
		}
		if c <= z.lastCap {
			m |= 1 << c
		}
	}
	return m, nil
}

func (z *zygoteServer) loadSeccomp() error {
	if len(z.filter) == 0 {
		return nil
	}
	prog := unix.SockFprog{Len: uint16(len(z.filter)), Filter: &z.filter[0]}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("load seccomp filter: %w", e)
	}
	return nil
}

// lookPath finds name as crun does: a name with a slash as it is, any
// other in the environment's PATH, as the calling thread's user in its
// mount namespace.
func lookPath(name string, env []string) (string, error) {
	notFound := &startError{127, fmt.Sprintf("executable file `%s` not found in $PATH: No such file or directory", name)}
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", notFound
		}
		return name, nil
	}
	path := strings.TrimPrefix(defaultPath, "PATH=")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	denied := false
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if unix.Faccessat(unix.AT_FDCWD, p, unix.X_OK, unix.AT_EACCESS) != nil {
			denied = true
			continue
		}
		return p, nil
	}
	if denied {
		return "", &startError{126, "open executable: Permission denied"}
	}
	return "", notFound
}

// writeZygoteMsg sends v as one message, with files.
func writeZygoteMsg(conn *net.UnixConn, v any, files []*os.File) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > zygoteMaxMsg {
		return fmt.Errorf("zygote message: %d bytes, more than %d", len(b), zygoteMaxMsg)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	_, _, err = conn.WriteMsgUnix(b, oob, nil)
	return err
}

// zygoteMaxFiles bounds the descriptors one message may carry.
const zygoteMaxFiles = 3

// readZygoteMsg receives one message into v, and the files it carries;
// buf holds the message and must be zygoteMaxMsg long.
func readZygoteMsg(conn *net.UnixConn, buf []byte, v any) ([]*os.File, error) {
	oob := make([]byte, unix.CmsgSpace(zygoteMaxFiles*4))
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	if n == 0 && oobn == 0 {
		return nil, io.EOF
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, fmt.Errorf("zygote message: %w", err)
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				unix.CloseOnExec(fd)
				files = append(files, os.NewFile(uintptr(fd), "zygote-fd"))
			}
		}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeFiles(files)
		return nil, errors.New("zygote message: truncated")
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		closeFiles(files)
		return nil, fmt.Errorf("zygote message: %w", err)
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
