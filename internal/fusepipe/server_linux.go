package fusepipe

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// serverSys holds the descriptors every session resolves against.
type serverSys struct {
	rootFd int // O_PATH on the shared directory
	procFd int // /proc/self/fd, to reopen O_PATH descriptors with real access
	umask  uint32
}

func (sy *serverSys) open(root string) error {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	pfd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return err
	}
	sy.rootFd, sy.procFd, sy.umask = fd, pfd, processUmask()
	return nil
}

func (sy *serverSys) close() error {
	return errors.Join(unix.Close(sy.rootFd), unix.Close(sy.procFd))
}

// processUmask reads the umask without changing it (umask(2) would race
// with other goroutines creating files).
func processUmask() uint32 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0o022
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return uint32(m)
			}
		}
	}
	return 0o022
}

func (sy *serverSys) addRoot(ss *session) error {
	fd, err := unix.Openat(sy.rootFd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	n := &node{id: rootNode, ref: newFdRef(fd), key: fileKey{st.Dev, st.Ino}, mode: syscall.S_IFDIR, nlookup: 1}
	ss.mu.Lock()
	ss.nodes[rootNode] = n
	ss.byKey[n.key] = n
	ss.mu.Unlock()
	return nil
}

// beneath confines every path walk to the directory it starts from.
// Names are single components already; this is the second wall.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_SYMLINKS

// checkName refuses anything but one plain path component.
func checkName(name string) error {
	switch {
	case len(name) > 255:
		return syscall.ENAMETOOLONG
	case name == "" || name == "." || name == ".." ||
		strings.IndexByte(name, '/') >= 0 || strings.IndexByte(name, 0) >= 0:
		return syscall.EINVAL
	}
	return nil
}

// mutating ops are refused on a read-only share.
func mutating(op Op) bool {
	switch op {
	case OpSetattr, OpCreate, OpWrite, OpMkdir, OpMknod, OpSymlink, OpLink,
		OpUnlink, OpRmdir, OpRename, OpSetxattr, OpRemovexattr, OpFallocate, OpCopyFileRange:
		return true
	}
	return false
}

func (ss *session) handle(rq *Request, rp *Reply, cancel <-chan struct{}) error {
	if ss.srv.opts.ReadOnly {
		if mutating(rq.Op) || rq.Op == OpOpen && writes(rq.Flags) {
			return syscall.EROFS
		}
		if rq.Op == OpGetlk || rq.Op == OpSetlk {
			// A read-only share takes no locks on host files: a
			// guest's lock would block host writers. Its mount keeps
			// locks in the guest kernel instead.
			return syscall.ENOLCK
		}
	}
	// Ops on an open handle name no node.
	switch rq.Op {
	case OpRead:
		return ss.read(rq, rp)
	case OpWrite:
		return ss.write(rq, rp)
	case OpFsync:
		return ss.fsync(rq)
	case OpRelease:
		ss.releaseFile(rq.Fh)
		return nil
	case OpReleaseDir:
		ss.releaseDir(rq.Fh)
		return nil
	case OpFallocate:
		return ss.fallocate(rq)
	case OpLseek:
		return ss.lseek(rq, rp)
	case OpCopyFileRange:
		return ss.copyFileRange(rq, rp)
	}
	// Names the guest makes or removes are checked before anything is
	// resolved; lookups check theirs in lookupAt.
	switch rq.Op {
	case OpRename:
		if err := checkName(rq.Name2); err != nil {
			return err
		}
		fallthrough
	case OpCreate, OpMkdir, OpMknod, OpSymlink, OpLink, OpUnlink, OpRmdir:
		if err := checkName(rq.Name); err != nil {
			return err
		}
	}
	n, err := ss.node(rq.Node)
	if err != nil {
		return err
	}
	defer n.ref.release()
	switch rq.Op {
	case OpLookup: // Node (parent), Name → Entry
		return ss.lookupAt(n, rq.Name, &rp.Entry)
	case OpGetattr: // Node, Fh (optional) → Attr
		return ss.statAttr(n, &rp.Attr)
	case OpSetattr:
		return ss.setattr(n, rq, rp)
	case OpOpen:
		return ss.open(n, rq, rp)
	case OpCreate:
		return ss.create(n, rq, rp)
	case OpFlush:
		return ss.flush(n, rq)
	case OpFsyncDir:
		return ss.fsyncDir(n, rq)
	case OpReadDir:
		return ss.readDir(n, rq, rp)
	case OpMkdir, OpMknod, OpSymlink:
		return ss.makeNode(n, rq, rp)
	case OpLink:
		return ss.link(n, rq, rp)
	case OpUnlink, OpRmdir:
		return ss.remove(n, rq)
	case OpRename:
		return ss.rename(n, rq)
	case OpReadlink:
		return ss.readlink(n, rq, rp)
	case OpStatfs:
		return ss.statfs(n, rq, rp)
	case OpGetxattr, OpListxattr, OpSetxattr, OpRemovexattr:
		return ss.xattr(n, rq, rp)
	case OpGetlk:
		return ss.getlk(n, rq, rp)
	case OpSetlk:
		return ss.setlk(n, rq, cancel)
	}
	return syscall.ENOSYS
}

func fillAttr(a *Attr, st *unix.Stat_t) {
	*a = Attr{
		Ino: st.Ino, Size: uint64(st.Size), Blocks: uint64(st.Blocks),
		Atime: Timespec{st.Atim.Sec, uint32(st.Atim.Nsec)},
		Mtime: Timespec{st.Mtim.Sec, uint32(st.Mtim.Nsec)},
		Ctime: Timespec{st.Ctim.Sec, uint32(st.Ctim.Nsec)},
		Mode:  st.Mode, Nlink: uint32(st.Nlink), UID: st.Uid, GID: st.Gid,
		Rdev: uint32(st.Rdev), Blksize: uint32(st.Blksize),
	}
}

// statAttr fills a with what the guest sees of n: its host stat, with
// owner, group and mode from the override if it has one.
func (ss *session) statAttr(n *node, a *Attr) error {
	var st unix.Stat_t
	if err := fstat(n.ref.fd, &st); err != nil {
		return err
	}
	ss.fillGuestAttr(a, n, &st)
	return nil
}

func (ss *session) fillGuestAttr(a *Attr, n *node, st *unix.Stat_t) {
	fillAttr(a, st)
	v, _ := n.view(st)
	if v.mode&unix.S_IFMT == unix.S_IFLNK {
		if o, ok := ss.srv.links.get(fileKey{st.Dev, st.Ino}); ok {
			v.uid, v.gid = o.UID, o.GID
		}
	}
	a.UID, a.GID, a.Mode, a.Rdev = v.uid, v.gid, v.mode, v.rdev
}

func fstat(fd int, st *unix.Stat_t) error {
	return unix.Fstatat(fd, "", st, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
}

// lookupAt opens name in dir without following anything and records it
// as a node.
func (ss *session) lookupAt(dir *node, name string, e *Entry) error {
	if err := checkName(name); err != nil {
		return err
	}
	if dir.mode != syscall.S_IFDIR {
		return syscall.ENOTDIR
	}
	fd, err := unix.Openat2(dir.ref.fd, name, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath})
	if err != nil {
		return err
	}
	return ss.adopt(fd, e)
}

// adopt records one lookup of the O_PATH descriptor fd (taking it).
func (ss *session) adopt(fd int, e *Entry) error {
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	n, err := ss.addNode(fd, fileKey{st.Dev, st.Ino}, st.Mode)
	if err != nil {
		return err
	}
	defer n.ref.release()
	ss.fillGuestAttr(&e.Attr, n, &st)
	e.Node = n.id
	return nil
}

// reopen opens the inode behind an O_PATH descriptor for real I/O.
// Only regular files and directories are ever reopened: a FIFO would
// block the server and a device must not be reachable at all.
func (ss *session) reopen(n *node, flags int) (int, error) {
	switch n.mode {
	case syscall.S_IFREG:
	case syscall.S_IFDIR:
		if flags&unix.O_ACCMODE != unix.O_RDONLY {
			return -1, syscall.EISDIR
		}
	case syscall.S_IFLNK:
		return -1, syscall.ELOOP
	default:
		return -1, syscall.EACCES
	}
	return unix.Openat(ss.sys().procFd, strconv.Itoa(n.ref.fd), flags|unix.O_CLOEXEC, 0)
}

// openFlags keeps the flags that mean something on the host. With
// writeback caching the kernel reads pages of write-only files and
// computes append offsets itself.
func (ss *session) openFlags(f uint32) int {
	flags := int(f) & (unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_SYNC | unix.O_DSYNC | unix.O_NOATIME)
	if ss.writeback {
		flags &^= unix.O_APPEND
		if flags&unix.O_ACCMODE == unix.O_WRONLY {
			flags = flags&^unix.O_ACCMODE | unix.O_RDWR
		}
	}
	return flags
}

func writes(flags uint32) bool {
	return int(flags)&unix.O_ACCMODE != unix.O_RDONLY || int(flags)&unix.O_TRUNC != 0
}

// Open: Node, Flags → Fh.
func (ss *session) open(n *node, rq *Request, rp *Reply) error {
	fd, err := ss.openNode(n, rq.Flags)
	if err != nil {
		return err
	}
	rp.Fh, err = ss.addFile(fd)
	return err
}

// openNode opens n for I/O as the guest's open flags ask.
func (ss *session) openNode(n *node, guestFlags uint32) (int, error) {
	flags := ss.openFlags(guestFlags)
	fd, err := ss.reopen(n, flags)
	if err == syscall.EACCES && ss.writeback && int(guestFlags)&unix.O_ACCMODE == unix.O_WRONLY {
		// A write-only file cannot be widened to read-write for
		// writeback; the kernel copes with short page fills.
		fd, err = ss.reopen(n, flags&^unix.O_ACCMODE|unix.O_WRONLY)
	}
	return fd, err
}

// Create: Node (parent), Name, Flags, Mode, Caller → Entry, Fh. The new
// file belongs to Caller in the guest's view and to the server's user on
// the host.
func (ss *session) create(dir *node, rq *Request, rp *Reply) error {
	if dir.mode != syscall.S_IFDIR {
		return syscall.ENOTDIR
	}
	v, err := newView(dir, rq.Caller, syscall.S_IFREG|rq.Mode&0o7777)
	if err != nil {
		return err
	}
	// Always exclusive: a name already there is opened the way OPEN
	// would open it, never as whatever O_CREAT would reach (a FIFO
	// blocks, a device is the host's).
	flags := ss.openFlags(rq.Flags) | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat2(dir.ref.fd, rq.Name, &unix.OpenHow{Flags: uint64(flags), Mode: uint64(hostPerm(v.mode, false)), Resolve: beneath})
	if err == syscall.EEXIST && int(rq.Flags)&unix.O_EXCL == 0 {
		return ss.createExisting(dir, rq, rp)
	}
	if err != nil {
		return err
	}
	if err := initView(fd, v); err != nil {
		unix.Unlinkat(dir.ref.fd, rq.Name, 0)
		unix.Close(fd)
		return err
	}
	// A create that fails past this point (out of nodes or handles)
	// takes its file back with it.
	pfd, err := unix.Openat(ss.sys().procFd, strconv.Itoa(fd), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err == nil {
		err = ss.adopt(pfd, &rp.Entry)
	}
	if err != nil {
		unix.Unlinkat(dir.ref.fd, rq.Name, 0)
		unix.Close(fd)
		return err
	}
	if rp.Fh, err = ss.addFile(fd); err != nil {
		ss.forget([]Forget{{Node: rp.Entry.Node, N: 1}})
		rp.Entry = Entry{}
		unix.Unlinkat(dir.ref.fd, rq.Name, 0)
	}
	return err
}

// createExisting serves a CREATE without O_EXCL whose name is taken: the
// guest kernel sends it only when it believed the name free (the host or
// another mount made it since), or when the guest is hostile. It opens
// what is there as OPEN would, after the permission check the guest
// kernel skipped.
func (ss *session) createExisting(dir *node, rq *Request, rp *Reply) error {
	if err := ss.lookupAt(dir, rq.Name, &rp.Entry); err != nil {
		return err
	}
	fail := func(err error) error {
		ss.forget([]Forget{{Node: rp.Entry.Node, N: 1}})
		rp.Entry = Entry{}
		return err
	}
	n, err := ss.node(rp.Entry.Node)
	if err != nil {
		return fail(err)
	}
	defer n.ref.release()
	switch {
	case n.mode == syscall.S_IFDIR:
		return fail(syscall.EISDIR)
	case n.mode != syscall.S_IFREG || rp.Entry.Attr.Mode&syscall.S_IFMT != syscall.S_IFREG:
		// FIFOs, sockets and devices, real or in the guest's view:
		// never opened on the host.
		return fail(syscall.EACCES)
	case !mayOpen(rq.Caller, &rp.Entry.Attr, int(rq.Flags)):
		return fail(syscall.EACCES)
	}
	fd, err := ss.openNode(n, rq.Flags)
	if err != nil {
		return fail(err)
	}
	if rp.Fh, err = ss.addFile(fd); err != nil {
		return fail(err)
	}
	return nil
}

// newView is the guest's view of a node Caller makes in dir with mode
// (type and permission bits, the guest's umask already applied): owned by
// Caller, with dir's group and set-group-ID inherited for directories if
// dir is set-group-ID, as on a local file system.
func newView(dir *node, caller Owner, mode uint32) (view, error) {
	var st unix.Stat_t
	if err := fstat(dir.ref.fd, &st); err != nil {
		return view{}, err
	}
	dv, _ := dir.view(&st)
	v := view{uid: caller.UID, gid: caller.GID, mode: mode}
	if dv.mode&syscall.S_ISGID != 0 {
		v.gid = dv.gid
		if mode&syscall.S_IFMT == syscall.S_IFDIR {
			v.mode |= syscall.S_ISGID
		}
	}
	return v, nil
}

// initView gives the node fd was just made as the guest's view v. A file
// system without user xattrs keeps the host's owner; the host mode is
// harmless either way.
func initView(fd int, v view) error {
	var st unix.Stat_t
	if err := fstat(fd, &st); err != nil {
		return err
	}
	err := writeView(fd, &st, v, false)
	if err == syscall.EOPNOTSUPP {
		return unix.Fchmodat(unix.AT_FDCWD, procPath(fd), hostPerm(v.mode, st.Mode&unix.S_IFMT == unix.S_IFDIR), 0)
	}
	return err
}

// Read: Fh, Off, Size → Data.
func (ss *session) read(rq *Request, rp *Reply) error {
	f, err := ss.file(rq.Fh)
	if err != nil {
		return err
	}
	defer f.release()
	size := min(int(rq.Size), maxIO)
	buf := make([]byte, size)
	n, err := unix.Pread(f.fd, buf, int64(rq.Off))
	if err != nil {
		return err
	}
	rp.Data = buf[:n]
	return nil
}

// Write: Fh, Off, Data → Size (bytes written).
func (ss *session) write(rq *Request, rp *Reply) error {
	f, err := ss.file(rq.Fh)
	if err != nil {
		return err
	}
	defer f.release()
	n, err := unix.Pwrite(f.fd, rq.Data, int64(rq.Off))
	if err != nil {
		return err
	}
	rp.Size = uint32(n)
	return nil
}

// Fsync: Fh, Flags (1: data only).
func (ss *session) fsync(rq *Request) error {
	f, err := ss.file(rq.Fh)
	if err != nil {
		return err
	}
	defer f.release()
	if rq.Flags&1 != 0 {
		return unix.Fdatasync(f.fd)
	}
	return unix.Fsync(f.fd)
}

// FsyncDir: Node.
func (ss *session) fsyncDir(n *node, rq *Request) error {
	fd, err := ss.reopen(n, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}

// setattr: Node, Fh (optional), Valid, Mode, UID, GID, Len (size),
// Atime, Mtime → Attr.
func (ss *session) setattr(n *node, rq *Request, rp *Reply) error {
	fd := n.ref.fd
	if rq.Valid&(SetMode|SetUID|SetGID|SetKillSuidgid) != 0 {
		if err := ss.setView(n, rq); err != nil {
			return err
		}
	}
	if rq.Valid&SetSize != 0 {
		if err := ss.truncate(n, rq.Fh, int64(rq.Len)); err != nil {
			return err
		}
	}
	if rq.Valid&(SetAtime|SetMtime|SetAtimeNow|SetMtimeNow) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		switch {
		case rq.Valid&SetAtimeNow != 0:
			ts[0].Nsec = unix.UTIME_NOW
		case rq.Valid&SetAtime != 0:
			ts[0] = unix.Timespec{Sec: rq.Atime.Sec, Nsec: int64(rq.Atime.Nsec)}
		}
		switch {
		case rq.Valid&SetMtimeNow != 0:
			ts[1].Nsec = unix.UTIME_NOW
		case rq.Valid&SetMtime != 0:
			ts[1] = unix.Timespec{Sec: rq.Mtime.Sec, Nsec: int64(rq.Mtime.Nsec)}
		}
		if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return ss.statAttr(n, &rp.Attr)
}

// setView serves chmod, chown and the kill-suid bit: they change the
// guest's view only. The host file keeps its owner and gets the harmless
// mode standing for the new one. The guest kernel has already checked
// that the caller may (default_permissions), and sends the clearing of
// set-ID bits that a write or chown implies as a mode change.
func (ss *session) setView(n *node, rq *Request) error {
	if err := ss.changeView(n, rq); err != nil {
		return err
	}
	// chmod and chown change ctime even when they change nothing else,
	// or when (symlinks) the change lives in memory only. Changing the
	// owner to -1:-1 does that and nothing more.
	return unix.Fchownat(n.ref.fd, "", -1, -1, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
}

func (ss *session) changeView(n *node, rq *Request) error {
	var st unix.Stat_t
	if err := fstat(n.ref.fd, &st); err != nil {
		return err
	}
	if n.mode == syscall.S_IFLNK {
		// Symlinks carry no user xattrs (see linkOwners), and Linux
		// has no symlink modes.
		if rq.Valid&SetMode != 0 {
			return syscall.EOPNOTSUPP
		}
		var a Attr
		ss.fillGuestAttr(&a, n, &st)
		o := Owner{UID: a.UID, GID: a.GID}
		if rq.Valid&SetUID != 0 {
			o.UID = rq.UID
		}
		if rq.Valid&SetGID != 0 {
			o.GID = rq.GID
		}
		ss.srv.links.set(n.key, o)
		return nil
	}
	v, had := n.view(&st)
	defer n.dropView()
	if rq.Valid&SetMode != 0 {
		v.mode = v.mode&syscall.S_IFMT | rq.Mode&0o7777
	}
	if rq.Valid&SetUID != 0 {
		v.uid = rq.UID
	}
	if rq.Valid&SetGID != 0 {
		v.gid = rq.GID
	}
	if rq.Valid&SetKillSuidgid != 0 && v.mode&syscall.S_IFMT != syscall.S_IFDIR {
		v.mode &^= syscall.S_ISUID
		if v.mode&syscall.S_IXGRP != 0 {
			v.mode &^= syscall.S_ISGID
		}
	}
	if err := writeView(n.ref.fd, &st, v, had); err != syscall.EOPNOTSUPP {
		return err
	}
	// No user xattrs here (a host FIFO or socket, or a file system
	// without them): the host's stat is all there is, so only a
	// harmless mode change can be kept.
	if rq.Valid&(SetUID|SetGID) != 0 {
		return syscall.EPERM
	}
	return unix.Fchmodat(unix.AT_FDCWD, procPath(n.ref.fd), hostPerm(v.mode, n.mode == syscall.S_IFDIR), 0)
}

func (ss *session) truncate(n *node, fh uint64, size int64) error {
	if fh != 0 {
		if f, err := ss.file(fh); err == nil {
			defer f.release()
			return unix.Ftruncate(f.fd, size)
		}
	}
	fd, err := ss.reopen(n, unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Ftruncate(fd, size)
}

// makeNode serves Mkdir (Node, Name, Mode), Mknod (Node, Name, Mode,
// Rdev) and Symlink (Node, Name, Name2 = target), each with Caller →
// Entry. FIFOs, sockets and device nodes are empty regular files on the
// host whose override gives their type (see overrideTypes): nothing on
// the host can be made to block on one or reach a device through it.
func (ss *session) makeNode(dir *node, rq *Request, rp *Reply) error {
	if dir.mode != syscall.S_IFDIR {
		return syscall.ENOTDIR
	}
	var v view
	var err error
	switch rq.Op {
	case OpMkdir:
		if v, err = newView(dir, rq.Caller, syscall.S_IFDIR|rq.Mode&0o7777); err != nil {
			return err
		}
		if err := unix.Mkdirat(dir.ref.fd, rq.Name, hostPerm(v.mode, true)); err != nil {
			return err
		}
	case OpMknod:
		typ := rq.Mode & syscall.S_IFMT
		switch typ {
		case 0:
			typ = syscall.S_IFREG
		case syscall.S_IFIFO, syscall.S_IFREG, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
		default:
			return syscall.EINVAL
		}
		if v, err = newView(dir, rq.Caller, typ|rq.Mode&0o7777); err != nil {
			return err
		}
		if typ == syscall.S_IFCHR || typ == syscall.S_IFBLK {
			v.rdev = encodeDev(devMajor(rq.Rdev)&0xfff, devMinor(rq.Rdev))
		}
		fd, err := unix.Openat2(dir.ref.fd, rq.Name, &unix.OpenHow{
			Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Mode:  uint64(hostPerm(v.mode, false)), Resolve: beneath})
		if err != nil {
			return err
		}
		unix.Close(fd)
	case OpSymlink:
		// The target is stored, never followed by the server; the guest
		// kernel resolves it within the guest.
		if rq.Name2 == "" || len(rq.Name2) > 4095 || strings.IndexByte(rq.Name2, 0) >= 0 {
			return syscall.EINVAL
		}
		if v, err = newView(dir, rq.Caller, syscall.S_IFLNK|0o777); err != nil {
			return err
		}
		if err := unix.Symlinkat(rq.Name2, dir.ref.fd, rq.Name); err != nil {
			return err
		}
		fd, err := unix.Openat2(dir.ref.fd, rq.Name, &unix.OpenHow{
			Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath})
		if err == nil {
			var st unix.Stat_t
			if err = fstat(fd, &st); err == nil {
				ss.srv.links.set(fileKey{st.Dev, st.Ino}, Owner{UID: v.uid, GID: v.gid})
				err = ss.adopt(fd, &rp.Entry) // takes fd
			} else {
				unix.Close(fd)
			}
		}
		if err != nil {
			unix.Unlinkat(dir.ref.fd, rq.Name, 0)
		}
		return err
	}
	fd, err := unix.Openat2(dir.ref.fd, rq.Name, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: beneath})
	if err == nil {
		if err = initView(fd, v); err != nil {
			unix.Close(fd)
		} else {
			err = ss.adopt(fd, &rp.Entry) // takes fd
		}
	}
	if err != nil {
		// Out of nodes, or no view: take the new node back.
		flags := 0
		if rq.Op == OpMkdir {
			flags = unix.AT_REMOVEDIR
		}
		unix.Unlinkat(dir.ref.fd, rq.Name, flags)
		return err
	}
	return nil
}

// Link: Node (existing inode), Node2 (new parent), Name → Entry.
func (ss *session) link(n *node, rq *Request, rp *Reply) error {
	dir, err := ss.node(rq.Node2)
	if err != nil {
		return err
	}
	defer dir.ref.release()
	if n.mode == syscall.S_IFDIR {
		return syscall.EPERM
	}
	err = unix.Linkat(n.ref.fd, "", dir.ref.fd, rq.Name, unix.AT_EMPTY_PATH)
	if err == syscall.ENOENT || err == syscall.EPERM {
		// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the magic link does
		// not, and names the same inode.
		err = unix.Linkat(ss.sys().procFd, strconv.Itoa(n.ref.fd), dir.ref.fd, rq.Name, unix.AT_SYMLINK_FOLLOW)
	}
	if err != nil {
		return err
	}
	return ss.lookupAt(dir, rq.Name, &rp.Entry)
}

// Unlink, Rmdir: Node (parent), Name.
func (ss *session) remove(dir *node, rq *Request) error {
	flags := 0
	if rq.Op == OpRmdir {
		flags = unix.AT_REMOVEDIR
	}
	return unix.Unlinkat(dir.ref.fd, rq.Name, flags)
}

// Rename: Node, Name → Node2, Name2 with Flags (RENAME_NOREPLACE,
// RENAME_EXCHANGE). RENAME_WHITEOUT would leave a device node (0:0) on
// the host.
func (ss *session) rename(from *node, rq *Request) error {
	if rq.Flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	to, err := ss.node(rq.Node2)
	if err != nil {
		return err
	}
	defer to.ref.release()
	return unix.Renameat2(from.ref.fd, rq.Name, to.ref.fd, rq.Name2, uint(rq.Flags))
}

// Readlink: Node → Data.
func (ss *session) readlink(n *node, rq *Request, rp *Reply) error {
	buf := make([]byte, 4096)
	sz, err := unix.Readlinkat(n.ref.fd, "", buf)
	if err != nil {
		return err
	}
	rp.Data = buf[:sz]
	return nil
}

// Statfs: Node → Statfs.
func (ss *session) statfs(n *node, rq *Request, rp *Reply) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(n.ref.fd, &st); err != nil {
		return err
	}
	rp.Statfs = Statfs{
		Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail, Files: st.Files, Ffree: st.Ffree,
		Bsize: uint32(st.Bsize), NameLen: uint32(st.Namelen), Frsize: uint32(st.Frsize),
	}
	return nil
}

// xattr serves Getxattr (Node, Name, Size → Size, Data), Listxattr (Node,
// Size → Size, Data), Setxattr (Node, Name, Data, Flags) and Removexattr
// (Node, Name). Size 0 asks for the size only.
func (ss *session) xattr(n *node, rq *Request, rp *Reply) error {
	if n.mode != syscall.S_IFREG && n.mode != syscall.S_IFDIR {
		// xattrs on other inodes would need the path or a real open.
		if rq.Op == OpListxattr {
			return nil
		}
		return syscall.ENODATA
	}
	path := procPath(n.ref.fd)
	size := min(int(rq.Size), 64<<10)
	switch rq.Op {
	case OpGetxattr:
		if rq.Name == overrideXattr {
			return syscall.ENODATA
		}
		var buf []byte
		if size > 0 {
			buf = make([]byte, size)
		}
		sz, err := unix.Getxattr(path, rq.Name, buf)
		if err != nil {
			return err
		}
		rp.Size = uint32(sz)
		if size > 0 {
			rp.Data = buf[:sz]
		}
		return nil
	case OpListxattr:
		// The whole list, to take the override out before the size
		// is known.
		buf := make([]byte, 64<<10)
		sz, err := unix.Listxattr(path, buf)
		if err != nil {
			return err
		}
		list := hideOverride(buf[:sz])
		rp.Size = uint32(len(list))
		if size > 0 {
			if len(list) > size {
				return syscall.ERANGE
			}
			rp.Data = list
		}
		return nil
	case OpSetxattr:
		if !guestXattrWritable(rq.Name, false) {
			return syscall.EPERM
		}
		return unix.Setxattr(path, rq.Name, rq.Data, int(rq.Flags))
	default:
		if !guestXattrWritable(rq.Name, true) {
			return syscall.EPERM
		}
		return unix.Removexattr(path, rq.Name)
	}
}

// lockFd returns the open file description that carries owner's POSIX
// locks on n, creating it if create is set.
func (ss *session) lockFd(n *node, owner uint64, create bool) (int, error) {
	n.locksMu.Lock()
	defer n.locksMu.Unlock()
	if fd, ok := n.locks[owner]; ok {
		return fd, nil
	}
	if !create {
		return -1, nil
	}
	if int(ss.lockFds.Add(1)) > ss.srv.opts.MaxLockOwners {
		ss.lockFds.Add(-1)
		return -1, syscall.ENOLCK
	}
	fd, err := ss.reopen(n, unix.O_RDWR)
	if err != nil {
		if fd, err = ss.reopen(n, unix.O_RDONLY); err != nil {
			if fd, err = ss.reopen(n, unix.O_WRONLY); err != nil {
				ss.lockFds.Add(-1)
				return -1, err
			}
		}
	}
	if n.locks == nil {
		n.locks = map[uint64]int{}
	}
	n.locks[owner] = fd
	return fd, nil
}

// dropLocks releases every POSIX lock held on n through this session.
func (ss *session) dropLocks(n *node) {
	n.locksMu.Lock()
	defer n.locksMu.Unlock()
	for owner, fd := range n.locks {
		unix.Close(fd)
		delete(n.locks, owner)
		ss.lockFds.Add(-1)
	}
}

// Flush: Node, Owner. The client sends it only for owners holding POSIX
// locks: closing any descriptor drops a process's locks on the file.
func (ss *session) flush(n *node, rq *Request) error {
	n.locksMu.Lock()
	if fd, ok := n.locks[rq.Owner]; ok {
		unix.Close(fd)
		delete(n.locks, rq.Owner)
		ss.lockFds.Add(-1)
	}
	n.locksMu.Unlock()
	return nil
}

func toFlock(l Lock) unix.Flock_t {
	fl := unix.Flock_t{Type: int16(l.Type), Whence: 0, Start: int64(l.Start)}
	if l.End != math.MaxInt64 && l.End >= l.Start {
		fl.Len = int64(l.End - l.Start + 1)
	}
	return fl
}

// Getlk: Node, Fh, Owner, Lock → Lock (Type F_UNLCK if none conflicts).
func (ss *session) getlk(n *node, rq *Request, rp *Reply) error {
	fd, err := ss.lockFd(n, rq.Owner, false)
	if err != nil {
		return err
	}
	if fd < 0 {
		if fd, err = ss.reopen(n, unix.O_RDONLY); err != nil {
			return err
		}
		defer unix.Close(fd)
	}
	fl := toFlock(rq.Lock)
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &fl); err != nil {
		return err
	}
	rp.Lock = Lock{Type: uint32(fl.Type), Start: uint64(fl.Start), End: math.MaxInt64}
	if fl.Len > 0 {
		rp.Lock.End = uint64(fl.Start + fl.Len - 1)
	}
	if fl.Pid > 0 {
		rp.Lock.Pid = uint32(fl.Pid)
	}
	return nil
}

// Setlk: Node, Fh, Owner, Lock, Flags (lkFlock, lkWait). Waiting polls so
// an interrupt from the guest or the end of the session stops it.
func (ss *session) setlk(n *node, rq *Request, cancel <-chan struct{}) error {
	var try func() error
	if rq.Flags&lkFlock != 0 {
		f, err := ss.file(rq.Fh)
		if err != nil {
			return err
		}
		defer f.release()
		how := unix.LOCK_UN
		switch rq.Lock.Type {
		case unix.F_RDLCK:
			how = unix.LOCK_SH
		case unix.F_WRLCK:
			how = unix.LOCK_EX
		}
		try = func() error { return unix.Flock(f.fd, how|unix.LOCK_NB) }
	} else {
		fd, err := ss.lockFd(n, rq.Owner, rq.Lock.Type != unix.F_UNLCK)
		if err != nil {
			return err
		}
		if fd < 0 {
			return nil // unlocking what was never locked
		}
		fl := toFlock(rq.Lock)
		try = func() error { return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &fl) }
	}
	delay := 100 * time.Microsecond
	for {
		err := try()
		if err == nil || rq.Flags&lkWait == 0 || (err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EACCES) {
			return err
		}
		select {
		case <-cancel:
			return syscall.EINTR
		case <-time.After(delay):
		}
		// Every waiter polls; many waiters poll less often each, so
		// MaxLockWaits of them cost the host about what 64 do.
		delay = min(2*delay, 20*time.Millisecond*time.Duration(1+len(ss.lockSem)/64))
	}
}

// Fallocate: Fh, Off, Len, Mode.
func (ss *session) fallocate(rq *Request) error {
	f, err := ss.file(rq.Fh)
	if err != nil {
		return err
	}
	defer f.release()
	return unix.Fallocate(f.fd, rq.Mode, int64(rq.Off), int64(rq.Len))
}

// Lseek: Fh, Off, Flags (whence: SEEK_DATA or SEEK_HOLE) → Off.
func (ss *session) lseek(rq *Request, rp *Reply) error {
	f, err := ss.file(rq.Fh)
	if err != nil {
		return err
	}
	defer f.release()
	off, err := unix.Seek(f.fd, int64(rq.Off), int(rq.Flags))
	if err != nil {
		return err
	}
	rp.Off = uint64(off)
	return nil
}

// CopyFileRange: Fh, Off → Fh2, Off2, Len → Size.
func (ss *session) copyFileRange(rq *Request, rp *Reply) error {
	in, err := ss.file(rq.Fh)
	if err != nil {
		return err
	}
	defer in.release()
	out, err := ss.file(rq.Fh2)
	if err != nil {
		return err
	}
	defer out.release()
	offIn, offOut := int64(rq.Off), int64(rq.Off2)
	n, err := unix.CopyFileRange(in.fd, &offIn, out.fd, &offOut, int(min(rq.Len, 1<<30)), 0)
	if err != nil {
		return err
	}
	rp.Size = uint32(n)
	return nil
}

// dirBuf is one directory handle's getdents buffer: a few pages of the
// kernel's readdir requests, small because MaxHandles of them may exist.
const dirBuf = 8 << 10

// maxDirReply bounds one READDIR reply, whatever size the guest asks
// for, well inside MaxFrame (a wire entry costs at most one byte more
// than it does in the kernel's buffer).
const maxDirReply = 256 << 10

// dirHandle is an open directory being read.
type dirHandle struct {
	mu      sync.Mutex // guards the fields below; one reader at a time
	fd      int
	pos     uint64 // offset the next unread entry starts at
	buf     []byte
	pending []byte // undelivered getdents records
}

func (d *dirHandle) close() { unix.Close(d.fd) }

func (ss *session) releaseDir(dh uint64) {
	ss.mu.Lock()
	d, ok := ss.dirs[dh]
	delete(ss.dirs, dh)
	ss.mu.Unlock()
	if ok {
		d.mu.Lock()
		d.close()
		d.mu.Unlock()
	}
}

// fuseDirentSize is what one entry costs in the kernel's readdir buffer;
// the server fills no more than the kernel can take, so readdirplus never
// counts a lookup the kernel did not receive.
func fuseDirentSize(name string, plus bool) int {
	n := (24 + len(name) + 7) &^ 7
	if plus {
		n += 128
	}
	return n
}

// ReadDir: Node, Fh (0 opens the directory), Off, Size, Flags (1: plus)
// → Fh, Dirents.
func (ss *session) readDir(n *node, rq *Request, rp *Reply) error {
	ss.mu.Lock()
	d, ok := ss.dirs[rq.Fh]
	ss.mu.Unlock()
	if !ok {
		if rq.Fh != 0 {
			return syscall.EBADF
		}
		fd, err := ss.reopen(n, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		d = &dirHandle{fd: fd, buf: make([]byte, dirBuf)}
		ss.mu.Lock()
		if len(ss.files)+len(ss.dirs) >= ss.srv.opts.MaxHandles {
			ss.mu.Unlock()
			d.close()
			return syscall.ENFILE
		}
		rq.Fh = ss.nextFh
		ss.nextFh++
		ss.dirs[rq.Fh] = d
		ss.mu.Unlock()
	}
	rp.Fh = rq.Fh
	plus := rq.Flags&1 != 0
	d.mu.Lock()
	defer d.mu.Unlock()
	if rq.Off != d.pos {
		if _, err := unix.Seek(d.fd, int64(rq.Off), 0); err != nil {
			return err
		}
		d.pos, d.pending = rq.Off, nil
	}
	budget := min(int(rq.Size), maxDirReply)
	for {
		if len(d.pending) == 0 {
			nr, err := unix.Getdents(d.fd, d.buf)
			if err != nil {
				return err
			}
			if nr == 0 {
				return nil
			}
			d.pending = d.buf[:nr]
		}
		for len(d.pending) >= 19 {
			reclen := int(binary.NativeEndian.Uint16(d.pending[16:]))
			if reclen < 19 || reclen > len(d.pending) {
				return syscall.EIO
			}
			rec := d.pending[:reclen]
			name := rec[19:]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			de := Dirent{
				Ino:  binary.NativeEndian.Uint64(rec[0:]),
				Off:  binary.NativeEndian.Uint64(rec[8:]),
				Type: uint32(rec[18]) << 12,
				Name: string(name),
			}
			cost := fuseDirentSize(de.Name, plus)
			if cost > budget {
				return nil
			}
			if plus && de.Name != "." && de.Name != ".." {
				if ss.lookupAt(n, de.Name, &de.Entry) != nil {
					de.Entry = Entry{} // vanished since getdents, or no room: a plain entry
				} else {
					de.Type = de.Entry.Attr.Mode & syscall.S_IFMT // a FIFO is a file on the host
				}
			}
			budget -= cost
			rp.Dirents = append(rp.Dirents, de)
			d.pending = d.pending[reclen:]
			d.pos = de.Off
		}
		d.pending = nil
	}
}
