package fusepipe

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions configure a Mount.
type MountOptions struct {
	// ReadOnly mounts read-only in the guest. The host enforces its own
	// read-only flag regardless; a read-only server also makes the mount
	// read-only.
	ReadOnly bool
	// Log receives connection-level events. Nil discards them.
	Log *slog.Logger
	// AttrTimeout and EntryTimeout are how long the kernel trusts
	// attributes and names without asking; changes made on the host show
	// up in the guest after at most this long. Zero means one second;
	// negative disables caching.
	AttrTimeout, EntryTimeout time.Duration
	// NegativeTimeout is how long "no such file" is remembered. Zero
	// means one second; negative disables it.
	NegativeTimeout time.Duration
	// Writeback turns on the kernel's writeback cache: write(2) returns
	// once the page is dirty and close(2) or fsync(2) sends it to the
	// host. The kernel then trusts its own file sizes and mtimes, so
	// changes host processes make to files the guest has cached are not
	// seen. Turn it on only for directories the host leaves alone while
	// the guest runs (scratch space, build outputs).
	Writeback bool
	// Timeout is how long the host may stay silent before the mount
	// declares it gone and fails everything with EIO. Zero means 10s.
	Timeout time.Duration
	// Name is shown as the file system source in /proc/mounts.
	Name string
	// Debug logs every FUSE request to Log.
	Debug bool
}

// Client is a directory mounted from a Server: the guest end of one
// connection.
type Client struct {
	mountpoint string
	c          *client
	fs         *rawFS
	srv        *fuse.Server
	served     chan struct{}

	unmountOnce sync.Once
	unmountErr  error
}

func timeout(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return time.Second
	case d < 0:
		return 0
	}
	return d
}

// Mount performs the hello on conn and mounts what the server on the other
// end shares at mountpoint. It returns once the mount is ready. The Mount
// owns conn from then on.
func Mount(conn net.Conn, mountpoint string, opts MountOptions) (*Client, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	writeback := opts.Writeback && !opts.ReadOnly
	c, err := dial(conn, log, writeback, opts.Timeout)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	fs := &rawFS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		c:             c,
		attrTimeout:   timeout(opts.AttrTimeout),
		entryTimeout:  timeout(opts.EntryTimeout),
		negTimeout:    timeout(opts.NegativeTimeout),
		dirs:          map[uint64]*clientDir{},
		nextDir:       1,
		lockers:       map[lockerKey]struct{}{},
		noCaps:        map[uint64]time.Time{},
	}
	name := opts.Name
	if name == "" {
		name = "fusepipe"
	}
	mopts := []string{"default_permissions"}
	if opts.ReadOnly || c.readOnly {
		mopts = append(mopts, "ro")
	}
	extra := uint64(fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_ATOMIC_O_TRUNC)
	if writeback && !c.readOnly {
		extra |= fuse.CAP_WRITEBACK_CACHE
	}
	srv, err := fuse.NewServer(fs, mountpoint, &fuse.MountOptions{
		AllowOther:    true, // container processes run as many users
		Options:       mopts,
		MaxBackground: 64,
		MaxWrite:      maxIO,
		MaxReadAhead:  maxIO,
		FsName:        name,
		Name:          "fusepipe",
		Debug:         opts.Debug,
		Logger:        slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// A read-only server takes no locks on host files (a guest's
		// exclusive lock would block host writers); the guest kernel
		// then keeps the mount's locks itself, among guest processes.
		EnableLocks:          !c.readOnly,
		EnableSymlinkCaching: true,
		DirectMount:          true,
		ExtraCapabilities:    extra,
	})
	if err != nil {
		c.close()
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	m := &Client{mountpoint: mountpoint, c: c, fs: fs, srv: srv, served: make(chan struct{})}
	go func() {
		defer close(m.served)
		srv.Serve()
	}()
	if err := srv.WaitMount(); err != nil {
		m.Unmount()
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	return m, nil
}

// Wait blocks until the file system is unmounted (by Unmount or from
// outside, e.g. umount(8)).
func (m *Client) Wait() {
	<-m.served
}

// Unmount unmounts the file system, waits for it to stop serving and
// closes the connection. It fails with EBUSY while files are open on the
// mount. It is idempotent.
func (m *Client) Unmount() error {
	m.unmountOnce.Do(func() {
		m.unmountErr = m.srv.Unmount()
		if m.unmountErr != nil {
			m.unmountOnce = sync.Once{}
			return
		}
		<-m.served
		m.c.close()
	})
	return m.unmountErr
}

// Err reports why the connection to the host died, or nil while it lives.
func (m *Client) Err() error { return m.c.Err() }

// rawFS is the kernel-facing side: each FUSE request becomes one wire
// request, or none where the kernel's caches or local state answer it.
type rawFS struct {
	fuse.RawFileSystem
	c                                     *client
	attrTimeout, entryTimeout, negTimeout time.Duration

	// mu guards the fields below.
	mu      sync.Mutex
	dirs    map[uint64]*clientDir
	nextDir uint64
	lockers map[lockerKey]struct{} // who holds POSIX locks on what
	// noCaps holds, per node, until when the host last said it has no
	// security.capability. The kernel asks for it before every write(2)
	// (to drop capabilities of a written file), which doubled the cost
	// of a write; the answer is trusted as long as attributes are.
	noCaps map[uint64]time.Time
}

const capsXattr = "security.capability"

// capsKnownAbsent reports whether node's missing capability xattr is
// still trusted.
func (fs *rawFS) capsKnownAbsent(node uint64) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	until, ok := fs.noCaps[node]
	if ok && time.Now().After(until) {
		delete(fs.noCaps, node)
		return false
	}
	return ok
}

func (fs *rawFS) setCapsAbsent(node uint64, absent bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if !absent || fs.attrTimeout <= 0 {
		delete(fs.noCaps, node)
		return
	}
	if len(fs.noCaps) >= 4096 {
		now := time.Now()
		for n, until := range fs.noCaps {
			if now.After(until) {
				delete(fs.noCaps, n)
			}
		}
	}
	fs.noCaps[node] = time.Now().Add(fs.attrTimeout)
}

// clientDir is an open directory. The host directory is opened on the
// first read the kernel's readdir cache cannot answer.
type clientDir struct {
	mu  sync.Mutex // guards sfh
	sfh uint64     // the server's handle; 0 until first read
}

type lockerKey struct{ node, owner uint64 }

var _ fuse.RawFileSystem = (*rawFS)(nil)

func (fs *rawFS) String() string { return "fusepipe" }

func status(e syscall.Errno) fuse.Status { return fuse.Status(e) }

func (fs *rawFS) fillAttr(out *fuse.Attr, a *Attr) {
	*out = fuse.Attr{
		Ino: a.Ino, Size: a.Size, Blocks: a.Blocks,
		Atime: uint64(a.Atime.Sec), Mtime: uint64(a.Mtime.Sec), Ctime: uint64(a.Ctime.Sec),
		Atimensec: a.Atime.Nsec, Mtimensec: a.Mtime.Nsec, Ctimensec: a.Ctime.Nsec,
		Mode: a.Mode, Nlink: a.Nlink, Owner: fuse.Owner{Uid: a.UID, Gid: a.GID},
		Rdev: a.Rdev, Blksize: a.Blksize,
	}
}

func (fs *rawFS) fillEntry(out *fuse.EntryOut, e *Entry) {
	out.NodeId = e.Node
	out.Generation = 0
	fs.fillAttr(&out.Attr, &e.Attr)
	out.SetEntryTimeout(fs.entryTimeout)
	out.SetAttrTimeout(fs.attrTimeout)
}

func (fs *rawFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	rp, e := fs.c.call(cancel, &Request{Op: OpLookup, Node: h.NodeId, Name: name})
	if e == syscall.ENOENT && fs.negTimeout > 0 {
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(fs.negTimeout)
		return fuse.OK
	}
	if e != 0 {
		return status(e)
	}
	fs.fillEntry(out, &rp.Entry)
	return fuse.OK
}

func (fs *rawFS) Forget(node, nlookup uint64) {
	fs.c.notify(&Request{Op: OpForget, Forgets: []Forget{{Node: node, N: nlookup}}})
}

func (fs *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	rp, e := fs.c.call(cancel, &Request{Op: OpGetattr, Node: in.NodeId})
	if e != 0 {
		return status(e)
	}
	fs.fillAttr(&out.Attr, &rp.Attr)
	out.SetTimeout(fs.attrTimeout)
	return fuse.OK
}

func (fs *rawFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	rq := &Request{Op: OpSetattr, Node: in.NodeId}
	v := in.Valid
	if v&fuse.FATTR_FH != 0 {
		rq.Fh = in.Fh
	}
	if v&fuse.FATTR_MODE != 0 {
		rq.Valid |= SetMode
		rq.Mode = in.Mode
	}
	if v&fuse.FATTR_UID != 0 {
		rq.Valid |= SetUID
		rq.UID = in.Uid
	}
	if v&fuse.FATTR_GID != 0 {
		rq.Valid |= SetGID
		rq.GID = in.Gid
	}
	if v&fuse.FATTR_KILL_SUIDGID != 0 {
		rq.Valid |= SetKillSuidgid
	}
	if v&fuse.FATTR_SIZE != 0 {
		rq.Valid |= SetSize
		rq.Len = in.Size
	}
	if v&fuse.FATTR_ATIME_NOW != 0 {
		rq.Valid |= SetAtimeNow
	} else if v&fuse.FATTR_ATIME != 0 {
		rq.Valid |= SetAtime
		rq.Atime = Timespec{int64(in.Atime), in.Atimensec}
	}
	if v&fuse.FATTR_MTIME_NOW != 0 {
		rq.Valid |= SetMtimeNow
	} else if v&fuse.FATTR_MTIME != 0 {
		rq.Valid |= SetMtime
		rq.Mtime = Timespec{int64(in.Mtime), in.Mtimensec}
	}
	rp, e := fs.c.call(cancel, rq)
	if e != 0 {
		return status(e)
	}
	fs.fillAttr(&out.Attr, &rp.Attr)
	out.SetTimeout(fs.attrTimeout)
	return fuse.OK
}

// openFlags: page cache survives close and reopen; the kernel drops it
// when it sees the host change mtime or size (auto_inval_data).
const openFlags = fuse.FOPEN_KEEP_CACHE

func (fs *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	rp, e := fs.c.call(cancel, &Request{Op: OpOpen, Node: in.NodeId, Flags: in.Flags})
	if e != 0 {
		return status(e)
	}
	out.Fh = rp.Fh
	out.OpenFlags = openFlags
	return fuse.OK
}

func (fs *rawFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	rp, e := fs.c.call(cancel, &Request{Op: OpCreate, Node: in.NodeId, Name: name, Flags: in.Flags, Mode: in.Mode, Umask: in.Umask, Caller: caller(&in.InHeader)})
	if e != 0 {
		return status(e)
	}
	fs.fillEntry(&out.EntryOut, &rp.Entry)
	out.Fh = rp.Fh
	out.OpenFlags = openFlags
	return fuse.OK
}

func (fs *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	rp, e := fs.c.call(cancel, &Request{Op: OpRead, Fh: in.Fh, Off: in.Offset, Size: in.Size})
	if e != 0 {
		return nil, status(e)
	}
	return fuse.ReadResultData(rp.Data), fuse.OK
}

func (fs *rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	rp, e := fs.c.call(cancel, &Request{Op: OpWrite, Fh: in.Fh, Off: in.Offset, Data: data})
	if e != 0 {
		return 0, status(e)
	}
	return rp.Size, fuse.OK
}

func (fs *rawFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if len(data) == 1 {
		return fs.Write(cancel, in, data[0])
	}
	var n int
	for _, d := range data {
		n += len(d)
	}
	buf := make([]byte, 0, n)
	for _, d := range data {
		buf = append(buf, d...)
	}
	return fs.Write(cancel, in, buf)
}

// Flush runs at every close(2). The host has nothing to flush (writes
// reach it with pwrite); it only has POSIX locks to drop, which closing
// any descriptor does. So only owners that hold locks cost a round trip.
func (fs *rawFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	k := lockerKey{in.NodeId, in.LockOwner}
	fs.mu.Lock()
	_, locked := fs.lockers[k]
	delete(fs.lockers, k)
	fs.mu.Unlock()
	if !locked {
		if fs.c.Err() != nil {
			return fuse.EIO
		}
		return fuse.OK
	}
	_, e := fs.c.call(cancel, &Request{Op: OpFlush, Node: in.NodeId, Owner: in.LockOwner})
	return status(e)
}

func (fs *rawFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	_, e := fs.c.call(cancel, &Request{Op: OpFsync, Fh: in.Fh, Flags: in.FsyncFlags & 1})
	return status(e)
}

func (fs *rawFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	fs.c.notify(&Request{Op: OpRelease, Fh: in.Fh})
}

// OpenDir is answered locally; the kernel's readdir cache (keyed to the
// directory's mtime) often makes the host directory never need opening.
func (fs *rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if fs.c.Err() != nil {
		return fuse.EIO
	}
	fs.mu.Lock()
	out.Fh = fs.nextDir
	fs.nextDir++
	fs.dirs[out.Fh] = &clientDir{}
	fs.mu.Unlock()
	out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (fs *rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(cancel, in, out, false)
}

func (fs *rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(cancel, in, out, true)
}

func (fs *rawFS) readDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	fs.mu.Lock()
	d, ok := fs.dirs[in.Fh]
	fs.mu.Unlock()
	if !ok {
		return fuse.EBADF
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	rq := &Request{Op: OpReadDir, Node: in.NodeId, Fh: d.sfh, Off: in.Offset, Size: in.Size}
	if plus {
		rq.Flags = 1
	}
	rp, e := fs.c.call(cancel, rq)
	if e != 0 {
		return status(e)
	}
	d.sfh = rp.Fh
	var unsent []Forget
	for i := range rp.Dirents {
		de := &rp.Dirents[i]
		fe := fuse.DirEntry{Name: de.Name, Mode: de.Type, Ino: de.Ino, Off: de.Off}
		if !plus {
			if !out.AddDirEntry(fe) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(fe)
		if eo == nil {
			// The kernel never sees these; give their lookups back.
			for _, rest := range rp.Dirents[i:] {
				if rest.Entry.Node != 0 {
					unsent = append(unsent, Forget{Node: rest.Entry.Node, N: 1})
				}
			}
			break
		}
		if de.Entry.Node != 0 {
			fs.fillEntry(eo, &de.Entry)
		}
	}
	if len(unsent) > 0 {
		fs.c.notify(&Request{Op: OpForget, Forgets: unsent})
	}
	return fuse.OK
}

func (fs *rawFS) ReleaseDir(in *fuse.ReleaseIn) {
	fs.mu.Lock()
	d, ok := fs.dirs[in.Fh]
	delete(fs.dirs, in.Fh)
	fs.mu.Unlock()
	if ok && d.sfh != 0 {
		fs.c.notify(&Request{Op: OpReleaseDir, Fh: d.sfh})
	}
}

func (fs *rawFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	_, e := fs.c.call(cancel, &Request{Op: OpFsyncDir, Node: in.NodeId})
	return status(e)
}

// caller is the guest user a request acts for; the server records it as
// the owner of what the request makes.
func caller(h *fuse.InHeader) Owner {
	return Owner{UID: h.Caller.Uid, GID: h.Caller.Gid}
}

func (fs *rawFS) entryCall(cancel <-chan struct{}, rq *Request, out *fuse.EntryOut) fuse.Status {
	rp, e := fs.c.call(cancel, rq)
	if e != 0 {
		return status(e)
	}
	fs.fillEntry(out, &rp.Entry)
	return fuse.OK
}

func (fs *rawFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.entryCall(cancel, &Request{Op: OpMkdir, Node: in.NodeId, Name: name, Mode: in.Mode, Umask: in.Umask, Caller: caller(&in.InHeader)}, out)
}

func (fs *rawFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.entryCall(cancel, &Request{Op: OpMknod, Node: in.NodeId, Name: name, Mode: in.Mode, Rdev: in.Rdev, Umask: in.Umask, Caller: caller(&in.InHeader)}, out)
}

func (fs *rawFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return fs.entryCall(cancel, &Request{Op: OpSymlink, Node: h.NodeId, Name: name, Name2: target, Caller: caller(h)}, out)
}

func (fs *rawFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.entryCall(cancel, &Request{Op: OpLink, Node: in.Oldnodeid, Node2: in.NodeId, Name: name}, out)
}

func (fs *rawFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	_, e := fs.c.call(cancel, &Request{Op: OpUnlink, Node: h.NodeId, Name: name})
	return status(e)
}

func (fs *rawFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	_, e := fs.c.call(cancel, &Request{Op: OpRmdir, Node: h.NodeId, Name: name})
	return status(e)
}

func (fs *rawFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	_, e := fs.c.call(cancel, &Request{Op: OpRename, Node: in.NodeId, Name: oldName, Node2: in.Newdir, Name2: newName, Flags: in.Flags})
	return status(e)
}

func (fs *rawFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	rp, e := fs.c.call(cancel, &Request{Op: OpReadlink, Node: h.NodeId})
	if e != 0 {
		return nil, status(e)
	}
	return rp.Data, fuse.OK
}

func (fs *rawFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	rp, e := fs.c.call(cancel, &Request{Op: OpStatfs, Node: h.NodeId})
	if e != 0 {
		return status(e)
	}
	s := rp.Statfs
	*out = fuse.StatfsOut{Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail, Files: s.Files,
		Ffree: s.Ffree, Bsize: s.Bsize, NameLen: s.NameLen, Frsize: s.Frsize}
	return fuse.OK
}

func (fs *rawFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	caps := attr == capsXattr
	if caps && fs.capsKnownAbsent(h.NodeId) {
		return 0, fuse.ENOATTR
	}
	rp, e := fs.c.call(cancel, &Request{Op: OpGetxattr, Node: h.NodeId, Name: attr, Size: uint32(len(dest))})
	if caps {
		fs.setCapsAbsent(h.NodeId, e == syscall.ENODATA)
	}
	if e != 0 {
		return 0, status(e)
	}
	copy(dest, rp.Data)
	return rp.Size, fuse.OK
}

func (fs *rawFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	rp, e := fs.c.call(cancel, &Request{Op: OpListxattr, Node: h.NodeId, Size: uint32(len(dest))})
	if e != 0 {
		return 0, status(e)
	}
	copy(dest, rp.Data)
	return rp.Size, fuse.OK
}

func (fs *rawFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	rq := &Request{Op: OpSetxattr, Node: in.NodeId, Name: attr, Data: data, Flags: in.Flags}
	if len(data) == 0 {
		rq.Data = nil
	}
	_, e := fs.c.call(cancel, rq)
	if attr == capsXattr {
		fs.setCapsAbsent(in.NodeId, false)
	}
	return status(e)
}

func (fs *rawFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	_, e := fs.c.call(cancel, &Request{Op: OpRemovexattr, Node: h.NodeId, Name: attr})
	if attr == capsXattr {
		fs.setCapsAbsent(h.NodeId, e == 0)
	}
	return status(e)
}

func lockReq(op Op, in *fuse.LkIn) *Request {
	rq := &Request{Op: op, Node: in.NodeId, Fh: in.Fh, Owner: in.Owner,
		Lock: Lock{Start: in.Lk.Start, End: in.Lk.End, Type: in.Lk.Typ, Pid: in.Lk.Pid}}
	if in.LkFlags&fuse.FUSE_LK_FLOCK != 0 {
		rq.Flags |= lkFlock
	}
	return rq
}

func (fs *rawFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	rp, e := fs.c.call(cancel, lockReq(OpGetlk, in))
	if e != 0 {
		return status(e)
	}
	out.Lk = fuse.FileLock{Start: rp.Lock.Start, End: rp.Lock.End, Typ: rp.Lock.Type, Pid: rp.Lock.Pid}
	return fuse.OK
}

func (fs *rawFS) setLk(cancel <-chan struct{}, in *fuse.LkIn, wait bool) fuse.Status {
	rq := lockReq(OpSetlk, in)
	if wait {
		rq.Flags |= lkWait
	}
	posix := in.LkFlags&fuse.FUSE_LK_FLOCK == 0 && in.Lk.Typ != syscall.F_UNLCK
	if posix {
		// Record before asking, so a close racing the grant still
		// sends the flush that drops it.
		fs.mu.Lock()
		fs.lockers[lockerKey{in.NodeId, in.Owner}] = struct{}{}
		fs.mu.Unlock()
	}
	_, e := fs.c.call(cancel, rq)
	return status(e)
}

func (fs *rawFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return fs.setLk(cancel, in, false)
}

func (fs *rawFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return fs.setLk(cancel, in, true)
}

func (fs *rawFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	_, e := fs.c.call(cancel, &Request{Op: OpFallocate, Fh: in.Fh, Off: in.Offset, Len: in.Length, Mode: in.Mode})
	return status(e)
}

func (fs *rawFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	rp, e := fs.c.call(cancel, &Request{Op: OpLseek, Fh: in.Fh, Off: in.Offset, Flags: in.Whence})
	if e != 0 {
		return status(e)
	}
	out.Offset = rp.Off
	return fuse.OK
}

func (fs *rawFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	rp, e := fs.c.call(cancel, &Request{Op: OpCopyFileRange, Fh: in.FhIn, Off: in.OffIn, Fh2: in.FhOut, Off2: in.OffOut, Len: in.Len})
	if e != 0 {
		return 0, status(e)
	}
	return rp.Size, fuse.OK
}
