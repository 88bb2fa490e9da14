package fusepipe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// ReadOnly refuses every change with EROFS, whatever the guest asks.
	ReadOnly bool
	// Log receives connection-level events. Nil discards them.
	Log *slog.Logger

	// The limits below bound what one connection (one guest mount) may
	// hold on the host; together they bound its descriptors. Past a
	// limit the request fails and the connection goes on.

	// MaxNodes bounds the inodes the guest holds looked up, each an
	// O_PATH descriptor; past it LOOKUP, CREATE and the like fail with
	// ENFILE until the guest forgets some. Zero means 16384.
	MaxNodes int
	// MaxHandles bounds the files and directories the guest holds open,
	// one descriptor each; past it OPEN, CREATE and READDIR fail with
	// ENFILE. Zero means 4096.
	MaxHandles int
	// MaxLockOwners bounds the (file, lock owner) pairs holding POSIX
	// locks, one descriptor each; past it F_SETLK fails with ENOLCK.
	// Zero means 1024.
	MaxLockOwners int
	// MaxLockWaits bounds the blocking lock requests (F_SETLKW, flock)
	// waiting at once; past it they fail with ENOLCK. Waiters do not
	// count against the requests in flight, so a connection full of
	// them still answers everything else. Zero means 1024.
	MaxLockWaits int
}

func (o *ServerOptions) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxNodes, 16384)
	def(&o.MaxHandles, 4096)
	def(&o.MaxLockOwners, 1024)
	def(&o.MaxLockWaits, 1024)
}

// ErrServerClosed is returned by ServeConn after Close.
var ErrServerClosed = errors.New("fusepipe: server closed")

// Server shares one host directory. Each connection it serves is one
// guest mount with its own node and handle tables; nothing is shared
// between connections but the directory.
type Server struct {
	root string
	opts ServerOptions
	log  *slog.Logger
	sys  serverSys // platform state: root and /proc/self/fd descriptors

	links linkOwners

	// mu guards the fields below.
	mu       sync.Mutex
	closed   bool
	sessions map[*session]struct{}
	wg       sync.WaitGroup // running ServeConn calls
}

// NewServer prepares to share root, which must be an existing directory.
// The server touches files with the credentials of the calling process.
func NewServer(root string, opts ServerOptions) (*Server, error) {
	opts.setDefaults()
	s := &Server{root: root, opts: opts, log: opts.Log, sessions: map[*session]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.sys.open(root); err != nil {
		return nil, fmt.Errorf("share %s: %w", root, err)
	}
	return s, nil
}

// Close stops every ServeConn (closing their connections), waits for them
// and releases the shared directory. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for ss := range s.sessions {
		ss.conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return s.sys.close()
}

// ServeConn serves one guest mount over conn until the connection ends,
// ctx is done or the server is closed. It closes conn and every file the
// guest had open before returning. A connection closed by the peer returns
// nil.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return ErrServerClosed
	}
	ss := newSession(s, conn)
	s.sessions[ss] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, ss)
		s.mu.Unlock()
		s.wg.Done()
	}()

	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	err := ss.serve()
	conn.Close()
	ss.wait()
	ss.releaseAll()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// maxInFlight bounds the requests one connection runs at once, so a
// hostile guest cannot make the host start unbounded goroutines. Lock
// waits have their own budget (ServerOptions.MaxLockWaits).
const maxInFlight = 256

// session is the server side of one connection.
type session struct {
	srv       *Server
	conn      net.Conn
	writeback bool // the client caches writes: reads on write-only opens, no O_APPEND

	wmu sync.Mutex // serialises frame writes on conn

	sem      chan struct{} // requests in flight, lock waits aside
	lockSem  chan struct{} // blocking lock requests waiting
	handlers sync.WaitGroup
	lockFds  atomic.Int32 // descriptors held for POSIX lock owners

	// mu guards the fields below.
	mu        sync.Mutex
	nodes     map[uint64]*node
	byKey     map[fileKey]*node
	nextNode  uint64
	files     map[uint64]*fdRef
	dirs      map[uint64]*dirHandle
	nextFh    uint64
	cancelers map[uint64]chan struct{} // in-flight request ID → closed on interrupt
}

func newSession(s *Server, conn net.Conn) *session {
	return &session{
		srv:       s,
		conn:      conn,
		sem:       make(chan struct{}, maxInFlight),
		lockSem:   make(chan struct{}, s.opts.MaxLockWaits),
		nodes:     map[uint64]*node{},
		byKey:     map[fileKey]*node{},
		nextNode:  rootNode + 1,
		files:     map[uint64]*fdRef{},
		dirs:      map[uint64]*dirHandle{},
		nextFh:    1,
		cancelers: map[uint64]chan struct{}{},
	}
}

// rootNode is the root directory's node ID, fixed by FUSE.
const rootNode = 1

// fdRef is a descriptor shared by a table and the requests using it; the
// last release closes it, so a request racing a forget or a release never
// operates on a reused descriptor number.
type fdRef struct {
	fd   int
	refs atomic.Int32
}

func newFdRef(fd int) *fdRef {
	r := &fdRef{fd: fd}
	r.refs.Store(1)
	return r
}

func (r *fdRef) acquire() *fdRef { r.refs.Add(1); return r }

func (r *fdRef) release() {
	if r.refs.Add(-1) == 0 {
		syscall.Close(r.fd)
	}
}

// fileKey identifies an inode on the host.
type fileKey struct{ dev, ino uint64 }

// maxLinkOwners bounds linkOwners; past it new symlinks show the host's
// owner.
const maxLinkOwners = 1 << 16

// linkOwners holds who owns, in the guests' view, the symlinks guests
// made or chowned through this server. Linux keeps no user xattrs on
// symlinks, so this record lives in memory for the server's lifetime
// only: after a restart a symlink shows its host owner again. An entry
// outlives its inode; a symlink the host makes later on a reused inode
// number would show the old owner (owners of symlinks grant nothing).
type linkOwners struct {
	mu sync.Mutex // guards m
	m  map[fileKey]Owner
}

func (l *linkOwners) get(k fileKey) (Owner, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	o, ok := l.m[k]
	return o, ok
}

func (l *linkOwners) set(k fileKey, o Owner) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[fileKey]Owner{}
	}
	if _, ok := l.m[k]; ok || len(l.m) < maxLinkOwners {
		l.m[k] = o
	}
}

// view is what the guest sees of a node's ownership: owner, group and
// mode including the S_IFMT type bits.
type view struct {
	uid, gid, mode uint32
	rdev           uint32 // device number of a device node, as FUSE encodes it
}

// node is an inode the guest has looked up: an O_PATH descriptor on it.
type node struct {
	id      uint64
	ref     *fdRef
	key     fileKey
	mode    uint32 // S_IFMT bits; an inode's type never changes
	nlookup uint64 // guarded by session.mu

	// locksMu guards locks: one open file description per lock owner, so
	// POSIX locks of one guest process share an owner on the host and
	// conflict with everyone else's.
	locksMu sync.Mutex
	locks   map[uint64]int

	// viewMu guards the fields below, the guest's view as last read
	// (see node.view).
	viewMu    sync.Mutex
	viewOK    bool
	viewCtime Timespec
	cached    view
	cachedHad bool
}

func (ss *session) serve() error {
	br := bufio.NewReaderSize(ss.conn, 64<<10)
	body, err := readFrame(br, nil)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	flags, err := parseHello(body)
	if err != nil {
		return err
	}
	ss.writeback = flags&helloWriteback != 0
	var mine uint32
	if ss.srv.opts.ReadOnly {
		mine |= helloReadOnly
	}
	if err := ss.writeFrame(appendFrame(nil, appendHello(nil, mine))); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	if err := ss.sys().addRoot(ss); err != nil {
		return err
	}
	for {
		body, err := readFrame(br, nil)
		if err != nil {
			return err
		}
		req := new(Request)
		if err := DecodeRequest(body, req); err != nil {
			return err
		}
		switch req.Op {
		case OpPing:
			ss.reply(&Reply{ID: req.ID})
			continue
		case OpInterrupt:
			ss.mu.Lock()
			if c, ok := ss.cancelers[req.ID]; ok {
				close(c)
				delete(ss.cancelers, req.ID)
			}
			ss.mu.Unlock()
			continue
		case OpForget:
			ss.forget(req.Forgets)
			continue
		}
		// A lock wait may last as long as another process holds the
		// lock: it must not take a slot the reader blocks on, or PING
		// and INTERRUPT would go unread behind it.
		sem := ss.sem
		if req.Op == OpSetlk && req.Flags&lkWait != 0 {
			select {
			case ss.lockSem <- struct{}{}:
				sem = ss.lockSem
			default:
				ss.reply(&Reply{ID: req.ID, Errno: uint32(syscall.ENOLCK)})
				continue
			}
		} else {
			sem <- struct{}{}
		}
		ss.handlers.Add(1)
		var cancel chan struct{}
		if req.Op == OpSetlk {
			cancel = make(chan struct{})
			ss.mu.Lock()
			ss.cancelers[req.ID] = cancel
			ss.mu.Unlock()
		}
		go func() {
			defer func() {
				<-sem
				ss.handlers.Done()
			}()
			rp := Reply{ID: req.ID}
			if err := ss.handle(req, &rp, cancel); err != nil {
				rp = Reply{ID: req.ID, Errno: uint32(toErrno(err))}
			}
			if cancel != nil {
				ss.mu.Lock()
				delete(ss.cancelers, req.ID)
				ss.mu.Unlock()
			}
			if req.Op.hasReply() {
				ss.reply(&rp)
			}
		}()
	}
}

// wait waits for running handlers; the connection is closed, so their
// replies fail fast.
func (ss *session) wait() {
	ss.mu.Lock()
	for id, c := range ss.cancelers {
		close(c)
		delete(ss.cancelers, id)
	}
	ss.mu.Unlock()
	ss.handlers.Wait()
}

func (ss *session) sys() *serverSys { return &ss.srv.sys }

func (ss *session) reply(rp *Reply) {
	buf := AppendReply(getBuf(), rp)
	if err := ss.writeFrame(buf); err != nil {
		ss.conn.Close()
	}
	putBuf(buf)
}

func (ss *session) writeFrame(b []byte) error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	_, err := ss.conn.Write(b)
	return err
}

// appendFrame appends body with its length prefix.
func appendFrame(b, body []byte) []byte {
	e := encoder{b: b}
	e.u32(uint32(len(body)))
	e.b = append(e.b, body...)
	return e.b
}

// node returns the node with id, acquired; the caller releases n.ref.
func (ss *session) node(id uint64) (*node, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n, ok := ss.nodes[id]
	if !ok {
		return nil, syscall.ESTALE
	}
	n.ref.acquire()
	return n, nil
}

// file returns the open file fh, acquired; the caller releases it.
func (ss *session) file(fh uint64) (*fdRef, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f, ok := ss.files[fh]
	if !ok {
		return nil, syscall.EBADF
	}
	return f.acquire(), nil
}

// addFile records fd as an open file, taking it; past MaxHandles it
// closes fd and fails.
func (ss *session) addFile(fd int) (uint64, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.files)+len(ss.dirs) >= ss.srv.opts.MaxHandles {
		syscall.Close(fd)
		return 0, syscall.ENFILE
	}
	fh := ss.nextFh
	ss.nextFh++
	ss.files[fh] = newFdRef(fd)
	return fh, nil
}

func (ss *session) releaseFile(fh uint64) {
	ss.mu.Lock()
	f, ok := ss.files[fh]
	delete(ss.files, fh)
	ss.mu.Unlock()
	if ok {
		f.release()
	}
}

// addNode records one lookup of the inode fd refers to, taking ownership
// of fd, and returns its node, acquired: the caller releases n.ref. Past
// MaxNodes a new inode fails.
func (ss *session) addNode(fd int, key fileKey, mode uint32) (*node, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if n, ok := ss.byKey[key]; ok {
		n.nlookup++
		syscall.Close(fd)
		n.ref.acquire()
		return n, nil
	}
	if len(ss.nodes) >= ss.srv.opts.MaxNodes {
		syscall.Close(fd)
		return nil, syscall.ENFILE
	}
	n := &node{id: ss.nextNode, ref: newFdRef(fd), key: key, mode: mode & syscall.S_IFMT, nlookup: 1}
	ss.nextNode++
	ss.nodes[n.id] = n
	ss.byKey[key] = n
	n.ref.acquire()
	return n, nil
}

func (ss *session) forget(fs []Forget) {
	var gone []*node
	ss.mu.Lock()
	for _, f := range fs {
		n, ok := ss.nodes[f.Node]
		if !ok || n.id == rootNode {
			continue
		}
		if f.N >= n.nlookup {
			delete(ss.nodes, n.id)
			delete(ss.byKey, n.key)
			gone = append(gone, n)
		} else {
			n.nlookup -= f.N
		}
	}
	ss.mu.Unlock()
	for _, n := range gone {
		ss.dropLocks(n)
		n.ref.release()
	}
}

// releaseAll closes everything the connection had open.
func (ss *session) releaseAll() {
	ss.mu.Lock()
	nodes, files, dirs := ss.nodes, ss.files, ss.dirs
	ss.nodes, ss.byKey, ss.files, ss.dirs = map[uint64]*node{}, map[fileKey]*node{}, map[uint64]*fdRef{}, map[uint64]*dirHandle{}
	ss.mu.Unlock()
	for _, n := range nodes {
		ss.dropLocks(n)
		n.ref.release()
	}
	for _, f := range files {
		f.release()
	}
	for _, d := range dirs {
		d.close()
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() []byte { return (*bufPool.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	if cap(b) > MaxFrame+4096 {
		return
	}
	bufPool.Put(&b)
}

// toErrno maps err to the errno the guest sees; anything that is not an
// errno is an I/O error.
func toErrno(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) && e != 0 {
		return e
	}
	return syscall.EIO
}
