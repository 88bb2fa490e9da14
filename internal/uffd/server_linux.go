package uffd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Server serves guest memory to Firecracker clients over one socket.
type Server struct {
	opts    Options
	log     *slog.Logger
	mem     []byte // the memory file, mapped read-only
	memSize uint64
	zeros   []byte // one huge page of zeros, for removed 2 MiB pages
	ln      *net.UnixListener
	sock    os.FileInfo // the socket file NewServer made, removed by Close if still there
	euid    int         // clients must run as this uid or as root
	stopfd  int         // eventfd; readable once Close has begun
	nextID  atomic.Uint64

	// wsMu guards ws, the working set to prefetch (nil: none).
	wsMu sync.Mutex
	ws   []extent

	// mu guards the fields below.
	mu     sync.Mutex
	closed bool
	// clients are the clients being served. A client's descriptors (its
	// pidfd in particular) stay open while it is in the map.
	clients map[uint64]*client
	// serving counts clients being served, read on every wait to pick
	// how to wait (see client.waitRead).
	serving atomic.Int64
	pending map[*net.UnixConn]struct{} // connections still in the handshake
	wg      sync.WaitGroup             // one per handshake-or-client goroutine

	closeOnce sync.Once
	closeErr  error
}

// NewServer maps the memory file and starts listening on the socket.
// Clients that connect from then on wait in the socket's backlog until
// Serve runs, so the socket is ready for Firecracker when NewServer
// returns. Close releases everything NewServer took.
func NewServer(opts Options) (_ *Server, err error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	s := &Server{
		opts:    opts,
		log:     opts.Log,
		euid:    os.Geteuid(),
		stopfd:  -1,
		clients: make(map[uint64]*client),
		pending: make(map[*net.UnixConn]struct{}),
	}
	defer func() {
		if err != nil {
			s.release()
		}
	}()

	f, err := os.Open(opts.MemFile)
	if err != nil {
		return nil, fmt.Errorf("open memory file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat memory file: %w", err)
	}
	if fi.Size() <= 0 || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("memory file %s: not a non-empty regular file", opts.MemFile)
	}
	s.memSize = uint64(fi.Size())
	// MAP_SHARED: pages come from the page cache and are shared between
	// every client's copy source; PROT_READ: the file is never written.
	s.mem, err = unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map memory file %s: %w", opts.MemFile, err)
	}
	// Read-only private anonymous memory reads as the shared zero page.
	s.zeros, err = unix.Mmap(-1, 0, PageSize2M, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("map zero page: %w", err)
	}
	s.stopfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if opts.PrefetchWorkingSet {
		ws, err := readWorkingSet(opts.WorkingSet, s.memSize)
		switch {
		case err == nil:
			s.ws = ws
		case !errors.Is(err, fs.ErrNotExist):
			s.log.Warn("ignoring working set", "err", err)
		}
	}
	if err := removeStaleSocket(opts.Socket); err != nil {
		return nil, err
	}
	s.ln, s.sock, err = listenPrivate(opts.Socket)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", opts.Socket, err)
	}
	return s, nil
}

// listenPrivate listens on a new socket file at path with mode 0600, so
// that only the server's user (and root) may connect: connecting needs
// write permission on the file. bind(2) takes the mode from the umask,
// which is process-wide and cannot be changed for one call without a
// race, so the socket is bound in a fresh 0700 directory beside path,
// where nobody else can reach it, given its mode there, and then
// hard-linked into place; link(2) fails rather than replace a file that
// appeared at path meanwhile. It returns the file as it was made, to
// recognise it at Close.
func listenPrivate(path string) (_ *net.UnixListener, _ os.FileInfo, err error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".uffd-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	d, err := os.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	// Bound through the directory's descriptor: a Unix socket path is
	// limited to 107 bytes, and the temporary name may be longer than
	// path.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("/proc/self/fd/%d/s", d.Fd()), Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	// The name it was bound to goes with dir; Close removes path.
	ln.SetUnlinkOnClose(false)
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	tmp := filepath.Join(dir, "s")
	if err := os.Chmod(tmp, 0o600); err != nil {
		return nil, nil, err
	}
	if err := os.Link(tmp, path); err != nil {
		return nil, nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		os.Remove(path)
		return nil, nil, err
	}
	return ln, fi, nil
}

// removeStaleSocket removes a socket file left by a server that died, and
// refuses to take over one that a live server still accepts on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("socket path %s exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another server is listening on it; stop it or choose another path", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// SocketPath is where the server listens.
func (s *Server) SocketPath() string { return s.opts.Socket }

// MemSize is the size of the memory file in bytes.
func (s *Server) MemSize() uint64 { return s.memSize }

// Serve accepts clients until Close is called, then returns nil. Each
// client is served on its own goroutine; Serve itself only accepts and
// does not wait for them (Close does).
func (s *Server) Serve() error {
	var backoff time.Duration
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			// EMFILE and friends pass; back off rather than spin.
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept %s: %w", s.opts.Socket, err)
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return nil
		}
		s.pending[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(conn)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// handle runs one client from handshake to exit.
func (s *Server) handle(conn *net.UnixConn) {
	defer s.wg.Done()
	id := s.nextID.Add(1)
	c, err := s.handshake(conn, id)
	s.mu.Lock()
	delete(s.pending, conn)
	if err == nil && s.closed {
		err = errors.New("server is closing")
	}
	if err == nil {
		s.clients[id] = c
	}
	s.mu.Unlock()
	// Firecracker never reads or writes the socket again, and leaks its
	// end on purpose; the userfaultfd and pidfd are all the server needs.
	conn.Close()
	if err != nil {
		pid := 0
		var he *handshakeFailure
		if errors.As(err, &he) {
			pid, err = he.pid, he.err
		}
		if c != nil {
			c.close()
		}
		s.log.Warn("refused client", "client", id, "pid", pid, "err", err)
		return
	}
	if err := c.start(); err != nil {
		s.mu.Lock()
		delete(s.clients, id)
		s.mu.Unlock()
		s.log.Warn("refused client", "client", id, "pid", c.pid, "err", err)
		c.close()
		return
	}
	s.log.Info("client connected", "client", id, "pid", c.pid, "regions", len(c.regions))

	s.serving.Add(1)
	reason := c.run(s.prefetchSet())
	s.serving.Add(-1)

	s.mu.Lock()
	delete(s.clients, id)
	s.mu.Unlock()
	st := c.stats()
	s.log.Info("client gone", "client", id, "pid", c.pid, "reason", reason,
		"faults", st.Faults, "zero_faults", st.ZeroFaults, "prefetched", st.Prefetched,
		"bytes", st.Bytes, "p50", st.P50, "p99", st.P99)
	s.maybeRecord(c)
	c.close()
}

func (s *Server) prefetchSet() []extent {
	if !s.opts.PrefetchWorkingSet {
		return nil
	}
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	return s.ws
}

// maybeRecord writes c's page order as the working set if none exists.
func (s *Server) maybeRecord(c *client) {
	if !s.opts.RecordWorkingSet || c.prefetched || len(c.order) == 0 {
		return
	}
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	if s.ws != nil {
		return
	}
	if _, err := os.Stat(s.opts.WorkingSet); err == nil {
		return
	}
	if err := writeWorkingSet(s.opts.WorkingSet, c.order); err != nil {
		s.log.Warn("record working set", "err", err)
		return
	}
	s.ws = c.order
	s.log.Info("recorded working set", "path", s.opts.WorkingSet, "pages", len(c.order), "client", c.id)
}

// handshakeFailure carries the peer's PID, when known, with a refusal.
type handshakeFailure struct {
	pid int
	err error
}

func (h *handshakeFailure) Error() string { return h.err.Error() }
func (h *handshakeFailure) Unwrap() error { return h.err }

// maxFDs is how many descriptors the control buffer has room for: more
// than one so that a client sending two is told so, not truncated.
const maxFDs = 8

func (s *Server) handshake(conn *net.UnixConn, id uint64) (c *client, err error) {
	pid, uid, pidfd, err := peer(conn)
	if err != nil {
		return nil, err
	}
	var fds []int
	defer func() {
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			if pidfd >= 0 {
				unix.Close(pidfd)
			}
			err = &handshakeFailure{pid: pid, err: err}
		}
	}()

	// Before anything is read: whoever hands the server a userfaultfd
	// gets the snapshot's memory copied into it.
	if !peerAllowed(uid, s.euid) {
		return nil, fmt.Errorf("client runs as uid %d, not as the server's uid %d or root", uid, s.euid)
	}
	if err := conn.SetReadDeadline(time.Now().Add(s.opts.HandshakeTimeout)); err != nil {
		return nil, err
	}
	buf := make([]byte, MaxHandshakeSize)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n := 0
	for {
		k, oobn, flags, _, rerr := conn.ReadMsgUnix(buf[n:], oob)
		got, perr := parseRights(oob[:max(oobn, 0)])
		fds = append(fds, got...)
		n += max(k, 0) // -1 on some errors
		switch {
		case perr != nil:
			return nil, perr
		case flags&unix.MSG_CTRUNC != 0:
			return nil, badf("more than %d file descriptors passed, want exactly one userfaultfd", maxFDs)
		case errors.Is(rerr, os.ErrDeadlineExceeded) && s.isClosed():
			return nil, errors.New("server is closing")
		case errors.Is(rerr, os.ErrDeadlineExceeded) && n == 0:
			return nil, badf("nothing sent within %v of connecting", s.opts.HandshakeTimeout)
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			return nil, badf("incomplete message after %v: %q", s.opts.HandshakeTimeout, buf[:min(n, 64)])
		case rerr != nil:
			return nil, fmt.Errorf("read handshake: %w", rerr)
		}
		// Firecracker sends everything in one sendmsg, but a stream
		// socket may deliver it in pieces: read until the bytes are no
		// longer a prefix of valid JSON. Invalid JSON stops here too and
		// DecodeHandshake names the problem.
		if !incomplete(buf[:n]) {
			break
		}
		if k == 0 && oobn == 0 {
			if n == 0 {
				return nil, badf("connection closed before the handshake")
			}
			return nil, badf("connection closed mid-handshake: %q", buf[:min(n, 64)])
		}
		if n == len(buf) {
			return nil, badf("message longer than %d bytes", MaxHandshakeSize)
		}
	}
	regions, err := DecodeHandshake(buf[:n], s.memSize)
	if err != nil {
		return nil, err
	}
	switch len(fds) {
	case 0:
		return nil, badf("no file descriptor passed, want the userfaultfd as SCM_RIGHTS")
	case 1:
	default:
		return nil, badf("%d file descriptors passed, want exactly one userfaultfd", len(fds))
	}
	if !isUserfaultfd(fds[0]) {
		return nil, badf("the file descriptor passed is not a userfaultfd")
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		return nil, fmt.Errorf("set userfaultfd non-blocking: %w", err)
	}
	return newClient(s, id, pid, fds[0], pidfd, regions), nil
}

// peerAllowed says whether a client running as uid may be served by a
// server running as euid: only the server's own user, and root, who can
// read the memory file anyway.
func peerAllowed(uid, euid int) bool { return uid == euid || uid == 0 }

// peer returns the PID and effective uid of the process on the other end
// of conn (as it was when it connected, from SO_PEERCRED), and a pidfd
// that becomes readable when it exits. A userfaultfd says nothing
// when its process dies (the server's copy keeps it open), so the pidfd
// is how dead clients are noticed. SO_PEERPIDFD (Linux 6.5) names the
// process that connected even if its PID is reused; pidfd_open of the
// SO_PEERCRED PID is the fallback for older kernels.
func peer(conn *net.UnixConn) (pid, uid, pidfd int, err error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, -1, -1, err
	}
	pidfd = -1
	var cerr, perr error
	err = raw.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if cerr == nil {
			pid, uid = int(cred.Pid), int(cred.Uid)
		}
		pidfd, perr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return 0, -1, -1, fmt.Errorf("get peer credentials: %w", err)
	}
	if perr != nil {
		pidfd, perr = unix.PidfdOpen(pid, 0)
		if perr != nil {
			return pid, uid, -1, fmt.Errorf("open pidfd of peer %d: %w", pid, perr)
		}
	}
	return pid, uid, pidfd, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, badf("unparseable control message: %v", err)
	}
	var fds []int
	var bad error
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = badf("unexpected control message level %d type %d", m.Header.Level, m.Header.Type)
			continue
		}
		fds = append(fds, got...)
	}
	if bad != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, bad
	}
	return fds, nil
}

func isUserfaultfd(fd int) bool {
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	return err == nil && target == "anon_inode:[userfaultfd]"
}

// populate maps n bytes of the memory file at off into the server's page
// tables before they are copied. Without it UFFDIO_COPY finds the source
// unmapped, and for hugetlbfs falls back to a temporary huge page: one
// more than the clone needs, which fails with ENOMEM when the host's pool
// is exactly sized. Errors only lose that optimisation (MADV_POPULATE_READ
// is Linux 5.14+).
func (s *Server) populate(off, n uint64) {
	start := off &^ (PageSize4K - 1)
	end := min(off+n, s.memSize)
	unix.Madvise(s.mem[start:end], unix.MADV_POPULATE_READ)
}

// Stats returns the numbers of every client being served, in connection
// order.
func (s *Server) Stats() []ClientStats {
	s.mu.Lock()
	cs := make([]*client, 0, len(s.clients))
	for _, c := range s.clients {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	out := make([]ClientStats, len(cs))
	for i, c := range cs {
		out[i] = c.stats()
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// SignalClients sends sig to every client process being served, through
// the pidfd the server holds for each: a client that has exited gets
// nothing, and neither does a process that took over its PID. It returns
// the errors other than a client having exited.
func (s *Server) SignalClients(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, c := range s.clients {
		err := unix.PidfdSendSignal(c.pidfd, sig, nil, 0)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("signal client %d (pid %d): %w", c.id, c.pid, err))
		}
	}
	return errors.Join(errs...)
}

// Close stops accepting, removes the socket, stops serving every client
// and waits for their goroutines, then unmaps the memory file. It is safe
// to call more than once and from any goroutine. Clients still running
// keep their userfaultfd but nothing serves it any more: their next
// missing page blocks until they are killed, so stop the clones first
// (what Firecracker documents for a handler that goes away).
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for conn := range s.pending {
			conn.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
		var errs []error
		if s.ln != nil {
			if err := s.ln.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", s.opts.Socket, err))
			}
			if err := s.removeSocket(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.stopfd >= 0 {
			one := binary.NativeEndian.AppendUint64(nil, 1)
			if _, err := unix.Write(s.stopfd, one); err != nil {
				errs = append(errs, fmt.Errorf("signal clients: %w", err))
			}
		}
		s.wg.Wait()
		errs = append(errs, s.release())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// removeSocket removes the socket file NewServer made, unless it has been
// replaced since (say, by a server that found it stale after this one
// hung): that one is not this server's to remove.
func (s *Server) removeSocket() error {
	fi, err := os.Lstat(s.opts.Socket)
	if errors.Is(err, fs.ErrNotExist) || err == nil && !os.SameFile(fi, s.sock) {
		return nil
	}
	if err == nil {
		err = os.Remove(s.opts.Socket)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove socket: %w", err)
	}
	return nil
}

// release frees what NewServer took, other than the listener.
func (s *Server) release() error {
	var errs []error
	if s.stopfd >= 0 {
		unix.Close(s.stopfd)
		s.stopfd = -1
	}
	if s.mem != nil {
		if err := unix.Munmap(s.mem); err != nil {
			errs = append(errs, fmt.Errorf("unmap memory file: %w", err))
		}
		s.mem = nil
	}
	if s.zeros != nil {
		unix.Munmap(s.zeros)
		s.zeros = nil
	}
	return errors.Join(errs...)
}
