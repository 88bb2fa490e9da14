package fusepipe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Version is the wire protocol version. Both ends exchange it in the hello
// and refuse to talk to a different one: the guest agent and fcvm are built
// together, so there is no negotiation beyond "equal".
const Version = 1

// magic opens every hello so a stream that is not fuse-pipe fails at once.
const magic = 0x46504950 // "FPIP"

// MaxFrame bounds one frame on the wire (header included). It covers the
// largest read or write the client asks for plus room for the header.
const MaxFrame = 1<<20 + 64<<10

// maxIO is the largest read or write payload one request carries.
const maxIO = 1 << 20

// Op names a request.
type Op uint8

// Operations. Values are part of the wire format: append, never renumber.
const (
	OpHello Op = iota + 1
	OpPing
	OpLookup
	OpForget // no reply
	OpGetattr
	OpSetattr
	OpOpen
	OpCreate
	OpRead
	OpWrite
	OpFlush
	OpFsync
	OpRelease // no reply
	OpReadDir
	OpReleaseDir // no reply
	OpMkdir
	OpMknod
	OpSymlink
	OpLink
	OpUnlink
	OpRmdir
	OpRename
	OpReadlink
	OpStatfs
	OpGetxattr
	OpListxattr
	OpSetxattr
	OpRemovexattr
	OpGetlk
	OpSetlk
	OpFallocate
	OpLseek
	OpCopyFileRange
	OpInterrupt // no reply
	OpFsyncDir
	opMax
)

var opNames = [...]string{
	OpHello: "hello", OpPing: "ping", OpLookup: "lookup", OpForget: "forget",
	OpGetattr: "getattr", OpSetattr: "setattr", OpOpen: "open", OpCreate: "create",
	OpRead: "read", OpWrite: "write", OpFlush: "flush", OpFsync: "fsync",
	OpRelease: "release", OpReadDir: "readdir", OpReleaseDir: "releasedir",
	OpMkdir: "mkdir", OpMknod: "mknod", OpSymlink: "symlink", OpLink: "link",
	OpUnlink: "unlink", OpRmdir: "rmdir", OpRename: "rename", OpReadlink: "readlink",
	OpStatfs: "statfs", OpGetxattr: "getxattr", OpListxattr: "listxattr",
	OpSetxattr: "setxattr", OpRemovexattr: "removexattr", OpGetlk: "getlk",
	OpSetlk: "setlk", OpFallocate: "fallocate", OpLseek: "lseek",
	OpCopyFileRange: "copy_file_range", OpInterrupt: "interrupt", OpFsyncDir: "fsyncdir",
}

func (o Op) String() string {
	if o > 0 && o < opMax {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// hasReply reports whether the server answers op. Ops without a reply are
// notifications whose outcome the kernel does not wait for.
func (o Op) hasReply() bool {
	switch o {
	case OpForget, OpRelease, OpReleaseDir, OpInterrupt:
		return false
	}
	return true
}

// Setattr valid bits (Request.Valid for OpSetattr).
const (
	SetMode uint32 = 1 << iota
	SetUID
	SetGID
	SetSize
	SetAtime
	SetMtime
	SetAtimeNow
	SetMtimeNow
	// SetKillSuidgid clears set-user-ID, and set-group-ID if the group
	// may execute, as a write by an unprivileged process does.
	SetKillSuidgid
)

// Flags for Getlk and Setlk.
const (
	lkFlock = 1 << iota // BSD flock on the handle instead of a POSIX lock
	lkWait              // block until granted (Setlk only)
)

// Timespec is a point in time as the kernel stores it.
type Timespec struct {
	Sec  int64
	Nsec uint32
}

// Attr is a file's attributes, a subset of struct stat.
type Attr struct {
	Ino, Size, Blocks   uint64
	Atime, Mtime, Ctime Timespec
	Mode, Nlink         uint32
	UID, GID            uint32
	Rdev, Blksize       uint32
}

// Entry is the answer to anything that names a new node: the server's node
// ID (0 means "does not exist") and its attributes.
type Entry struct {
	Node uint64
	Attr Attr
}

// Dirent is one directory entry. Off is the position after the entry, to
// pass back to continue reading. With readdirplus, Entry is filled in and
// the server has counted one lookup on Entry.Node.
type Dirent struct {
	Ino   uint64
	Off   uint64
	Type  uint32 // S_IFMT bits
	Name  string
	Entry Entry
}

// Forget drops N lookups of Node.
type Forget struct {
	Node, N uint64
}

// Statfs is a file system's usage.
type Statfs struct {
	Blocks, Bfree, Bavail, Files, Ffree uint64
	Bsize, NameLen, Frsize              uint32
}

// Lock is a byte-range lock as F_GETLK reports it.
type Lock struct {
	Start, End uint64
	Type       uint32 // F_RDLCK, F_WRLCK, F_UNLCK
	Pid        uint32
}

// Request is one client to server message. Which fields an op uses is
// written next to the op's handler; unused fields are zero and cost nothing
// on the wire (a presence mask says which fields follow).
type Request struct {
	ID uint64
	Op Op

	Node, Node2 uint64 // the node operated on; second node (rename, link)
	Fh, Fh2     uint64 // file or directory handles
	Off, Off2   uint64
	Len         uint64
	Owner       uint64 // lock owner
	Flags       uint32
	Mode        uint32
	Umask       uint32
	UID, GID    uint32
	Valid       uint32 // setattr bits
	Size        uint32 // requested size (read, readdir, xattr buffers)
	Rdev        uint32
	Atime       Timespec
	Mtime       Timespec
	Lock        Lock
	Name, Name2 string
	Data        []byte
	Forgets     []Forget
	// Caller is the guest user a node-making request acts for: the
	// new node's owner.
	Caller Owner
}

// Owner is a guest user and group ID.
type Owner struct{ UID, GID uint32 }

// Reply is one server to client message, the answer to the request with
// the same ID.
type Reply struct {
	ID    uint64
	Errno uint32 // 0 on success; a Linux errno otherwise

	Entry   Entry
	Attr    Attr
	Fh      uint64
	Off     uint64
	Size    uint32
	Flags   uint32
	Data    []byte
	Dirents []Dirent
	Statfs  Statfs
	Lock    Lock
}

// ErrFrame reports a frame that does not decode. The connection carrying
// it is unusable: fields are not self-delimiting past the error.
var ErrFrame = errors.New("fusepipe: malformed frame")

// Frame layout, all little endian:
//
//	u32 length of the rest
//	u64 request ID
//	u8  op (request) | u32 errno (reply)
//	u32 presence mask
//	fields in mask bit order
const frameHeader = 4

// Request field presence bits.
const (
	rqNode = 1 << iota
	rqNode2
	rqFh
	rqFh2
	rqOff
	rqOff2
	rqLen
	rqOwner
	rqFlags
	rqMode
	rqUmask
	rqUID
	rqGID
	rqValid
	rqSize
	rqRdev
	rqAtime
	rqMtime
	rqLock
	rqName
	rqName2
	rqData
	rqForgets
	rqCaller
)

// Reply field presence bits.
const (
	rpEntry = 1 << iota
	rpAttr
	rpFh
	rpOff
	rpSize
	rpFlags
	rpData
	rpDirents
	rpStatfs
	rpLock
)

type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *encoder) bytes(v []byte) {
	e.u32(uint32(len(v)))
	e.b = append(e.b, v...)
}
func (e *encoder) str(v string) {
	e.u32(uint32(len(v)))
	e.b = append(e.b, v...)
}
func (e *encoder) ts(t Timespec) { e.u64(uint64(t.Sec)); e.u32(t.Nsec) }
func (e *encoder) attr(a *Attr) {
	e.u64(a.Ino)
	e.u64(a.Size)
	e.u64(a.Blocks)
	e.ts(a.Atime)
	e.ts(a.Mtime)
	e.ts(a.Ctime)
	e.u32(a.Mode)
	e.u32(a.Nlink)
	e.u32(a.UID)
	e.u32(a.GID)
	e.u32(a.Rdev)
	e.u32(a.Blksize)
}
func (e *encoder) entry(en *Entry) { e.u64(en.Node); e.attr(&en.Attr) }
func (e *encoder) lock(l Lock)     { e.u64(l.Start); e.u64(l.End); e.u32(l.Type); e.u32(l.Pid) }

// decoder reads fields until the first error, which sticks; callers check
// err once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = ErrFrame
		d.b = nil
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}
func (d *decoder) u8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}
func (d *decoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}
func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}
func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}
func (d *decoder) bytes() []byte {
	n := d.u32()
	if uint64(n) > uint64(len(d.b)) {
		d.err = ErrFrame
		return nil
	}
	return d.take(int(n))
}
func (d *decoder) str() string { return string(d.bytes()) }
func (d *decoder) ts() Timespec {
	return Timespec{Sec: int64(d.u64()), Nsec: d.u32()}
}
func (d *decoder) attr(a *Attr) {
	a.Ino = d.u64()
	a.Size = d.u64()
	a.Blocks = d.u64()
	a.Atime = d.ts()
	a.Mtime = d.ts()
	a.Ctime = d.ts()
	a.Mode = d.u32()
	a.Nlink = d.u32()
	a.UID = d.u32()
	a.GID = d.u32()
	a.Rdev = d.u32()
	a.Blksize = d.u32()
}
func (d *decoder) entry(en *Entry) { en.Node = d.u64(); d.attr(&en.Attr) }
func (d *decoder) lock() Lock {
	return Lock{Start: d.u64(), End: d.u64(), Type: d.u32(), Pid: d.u32()}
}

// count reads a repeated-field count and bounds it by the bytes left, each
// element taking at least min bytes, so a hostile count cannot make the
// decoder allocate more than the frame holds.
func (d *decoder) count(min int) int {
	n := d.u32()
	if d.err != nil {
		return 0
	}
	if hi, lo := bits.Mul64(uint64(n), uint64(min)); hi != 0 || lo > uint64(len(d.b)) {
		d.err = ErrFrame
		return 0
	}
	return int(n)
}

// AppendRequest appends r's frame (length prefix included) to b.
func AppendRequest(b []byte, r *Request) []byte {
	e := encoder{b: b}
	start := len(e.b)
	e.u32(0)
	e.u64(r.ID)
	e.u8(uint8(r.Op))
	var mask uint32
	maskAt := len(e.b)
	e.u32(0)
	if r.Node != 0 {
		mask |= rqNode
		e.u64(r.Node)
	}
	if r.Node2 != 0 {
		mask |= rqNode2
		e.u64(r.Node2)
	}
	if r.Fh != 0 {
		mask |= rqFh
		e.u64(r.Fh)
	}
	if r.Fh2 != 0 {
		mask |= rqFh2
		e.u64(r.Fh2)
	}
	if r.Off != 0 {
		mask |= rqOff
		e.u64(r.Off)
	}
	if r.Off2 != 0 {
		mask |= rqOff2
		e.u64(r.Off2)
	}
	if r.Len != 0 {
		mask |= rqLen
		e.u64(r.Len)
	}
	if r.Owner != 0 {
		mask |= rqOwner
		e.u64(r.Owner)
	}
	if r.Flags != 0 {
		mask |= rqFlags
		e.u32(r.Flags)
	}
	if r.Mode != 0 {
		mask |= rqMode
		e.u32(r.Mode)
	}
	if r.Umask != 0 {
		mask |= rqUmask
		e.u32(r.Umask)
	}
	if r.UID != 0 {
		mask |= rqUID
		e.u32(r.UID)
	}
	if r.GID != 0 {
		mask |= rqGID
		e.u32(r.GID)
	}
	if r.Valid != 0 {
		mask |= rqValid
		e.u32(r.Valid)
	}
	if r.Size != 0 {
		mask |= rqSize
		e.u32(r.Size)
	}
	if r.Rdev != 0 {
		mask |= rqRdev
		e.u32(r.Rdev)
	}
	if r.Atime != (Timespec{}) {
		mask |= rqAtime
		e.ts(r.Atime)
	}
	if r.Mtime != (Timespec{}) {
		mask |= rqMtime
		e.ts(r.Mtime)
	}
	if r.Lock != (Lock{}) {
		mask |= rqLock
		e.lock(r.Lock)
	}
	if r.Name != "" {
		mask |= rqName
		e.str(r.Name)
	}
	if r.Name2 != "" {
		mask |= rqName2
		e.str(r.Name2)
	}
	if len(r.Data) != 0 {
		mask |= rqData
		e.bytes(r.Data)
	}
	if len(r.Forgets) != 0 {
		mask |= rqForgets
		e.u32(uint32(len(r.Forgets)))
		for _, f := range r.Forgets {
			e.u64(f.Node)
			e.u64(f.N)
		}
	}
	if r.Caller != (Owner{}) {
		mask |= rqCaller
		e.u32(r.Caller.UID)
		e.u32(r.Caller.GID)
	}
	binary.LittleEndian.PutUint32(e.b[maskAt:], mask)
	binary.LittleEndian.PutUint32(e.b[start:], uint32(len(e.b)-start-frameHeader))
	return e.b
}

// DecodeRequest decodes one frame body (the bytes after the length prefix).
// Data aliases body.
func DecodeRequest(body []byte, r *Request) error {
	d := decoder{b: body}
	*r = Request{ID: d.u64(), Op: Op(d.u8())}
	mask := d.u32()
	if mask&rqNode != 0 {
		r.Node = d.u64()
	}
	if mask&rqNode2 != 0 {
		r.Node2 = d.u64()
	}
	if mask&rqFh != 0 {
		r.Fh = d.u64()
	}
	if mask&rqFh2 != 0 {
		r.Fh2 = d.u64()
	}
	if mask&rqOff != 0 {
		r.Off = d.u64()
	}
	if mask&rqOff2 != 0 {
		r.Off2 = d.u64()
	}
	if mask&rqLen != 0 {
		r.Len = d.u64()
	}
	if mask&rqOwner != 0 {
		r.Owner = d.u64()
	}
	if mask&rqFlags != 0 {
		r.Flags = d.u32()
	}
	if mask&rqMode != 0 {
		r.Mode = d.u32()
	}
	if mask&rqUmask != 0 {
		r.Umask = d.u32()
	}
	if mask&rqUID != 0 {
		r.UID = d.u32()
	}
	if mask&rqGID != 0 {
		r.GID = d.u32()
	}
	if mask&rqValid != 0 {
		r.Valid = d.u32()
	}
	if mask&rqSize != 0 {
		r.Size = d.u32()
	}
	if mask&rqRdev != 0 {
		r.Rdev = d.u32()
	}
	if mask&rqAtime != 0 {
		r.Atime = d.ts()
	}
	if mask&rqMtime != 0 {
		r.Mtime = d.ts()
	}
	if mask&rqLock != 0 {
		r.Lock = d.lock()
	}
	if mask&rqName != 0 {
		r.Name = d.str()
	}
	if mask&rqName2 != 0 {
		r.Name2 = d.str()
	}
	if mask&rqData != 0 {
		r.Data = d.bytes()
	}
	if mask&rqForgets != 0 {
		n := d.count(16)
		r.Forgets = make([]Forget, n)
		for i := range r.Forgets {
			r.Forgets[i] = Forget{Node: d.u64(), N: d.u64()}
		}
	}
	if mask&rqCaller != 0 {
		r.Caller = Owner{UID: d.u32(), GID: d.u32()}
	}
	if d.err == nil && (len(d.b) != 0 || mask >= rqCaller<<1) {
		d.err = ErrFrame
	}
	if d.err != nil {
		return fmt.Errorf("decode request: %w", d.err)
	}
	return nil
}

// AppendReply appends r's frame (length prefix included) to b.
func AppendReply(b []byte, r *Reply) []byte {
	e := encoder{b: b}
	start := len(e.b)
	e.u32(0)
	e.u64(r.ID)
	e.u32(r.Errno)
	var mask uint32
	maskAt := len(e.b)
	e.u32(0)
	if r.Entry != (Entry{}) {
		mask |= rpEntry
		e.entry(&r.Entry)
	}
	if r.Attr != (Attr{}) {
		mask |= rpAttr
		e.attr(&r.Attr)
	}
	if r.Fh != 0 {
		mask |= rpFh
		e.u64(r.Fh)
	}
	if r.Off != 0 {
		mask |= rpOff
		e.u64(r.Off)
	}
	if r.Size != 0 {
		mask |= rpSize
		e.u32(r.Size)
	}
	if r.Flags != 0 {
		mask |= rpFlags
		e.u32(r.Flags)
	}
	if len(r.Data) != 0 {
		mask |= rpData
		e.bytes(r.Data)
	}
	if len(r.Dirents) != 0 {
		mask |= rpDirents
		e.u32(uint32(len(r.Dirents)))
		for i := range r.Dirents {
			de := &r.Dirents[i]
			e.u64(de.Ino)
			e.u64(de.Off)
			e.u32(de.Type)
			e.str(de.Name)
			if de.Entry != (Entry{}) {
				e.u8(1)
				e.entry(&de.Entry)
			} else {
				e.u8(0)
			}
		}
	}
	if r.Statfs != (Statfs{}) {
		mask |= rpStatfs
		s := &r.Statfs
		e.u64(s.Blocks)
		e.u64(s.Bfree)
		e.u64(s.Bavail)
		e.u64(s.Files)
		e.u64(s.Ffree)
		e.u32(s.Bsize)
		e.u32(s.NameLen)
		e.u32(s.Frsize)
	}
	if r.Lock != (Lock{}) {
		mask |= rpLock
		e.lock(r.Lock)
	}
	binary.LittleEndian.PutUint32(e.b[maskAt:], mask)
	binary.LittleEndian.PutUint32(e.b[start:], uint32(len(e.b)-start-frameHeader))
	return e.b
}

// DecodeReply decodes one frame body (the bytes after the length prefix).
// Data aliases body.
func DecodeReply(body []byte, r *Reply) error {
	d := decoder{b: body}
	*r = Reply{ID: d.u64(), Errno: d.u32()}
	mask := d.u32()
	if mask&rpEntry != 0 {
		d.entry(&r.Entry)
	}
	if mask&rpAttr != 0 {
		d.attr(&r.Attr)
	}
	if mask&rpFh != 0 {
		r.Fh = d.u64()
	}
	if mask&rpOff != 0 {
		r.Off = d.u64()
	}
	if mask&rpSize != 0 {
		r.Size = d.u32()
	}
	if mask&rpFlags != 0 {
		r.Flags = d.u32()
	}
	if mask&rpData != 0 {
		r.Data = d.bytes()
	}
	if mask&rpDirents != 0 {
		n := d.count(8 + 8 + 4 + 4 + 1)
		r.Dirents = make([]Dirent, n)
		for i := range r.Dirents {
			de := &r.Dirents[i]
			de.Ino = d.u64()
			de.Off = d.u64()
			de.Type = d.u32()
			de.Name = d.str()
			if d.u8() != 0 {
				d.entry(&de.Entry)
			}
		}
	}
	if mask&rpStatfs != 0 {
		s := &r.Statfs
		s.Blocks = d.u64()
		s.Bfree = d.u64()
		s.Bavail = d.u64()
		s.Files = d.u64()
		s.Ffree = d.u64()
		s.Bsize = d.u32()
		s.NameLen = d.u32()
		s.Frsize = d.u32()
	}
	if mask&rpLock != 0 {
		r.Lock = d.lock()
	}
	if d.err == nil && (len(d.b) != 0 || mask >= rpLock<<1) {
		d.err = ErrFrame
	}
	if d.err != nil {
		return fmt.Errorf("decode reply: %w", d.err)
	}
	return nil
}

// readFrame reads one length-prefixed frame body into buf (grown as
// needed) and returns it.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("frame of %d bytes: %w", n, ErrFrame)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// The hello is the first frame on a connection in each direction:
//
//	u32 magic, u16 version, u32 flags

// Hello flags.
const (
	helloReadOnly  = 1 << iota // server: every change fails with EROFS
	helloWriteback             // client: the kernel caches writes
)

func appendHello(b []byte, flags uint32) []byte {
	e := encoder{b: b}
	e.u32(magic)
	e.u16(Version)
	e.u32(flags)
	return e.b
}

// ErrVersion reports a peer speaking another protocol version.
var ErrVersion = errors.New("fusepipe: protocol version mismatch")

func parseHello(b []byte) (flags uint32, err error) {
	d := decoder{b: b}
	m, v, f := d.u32(), d.u16(), d.u32()
	if d.err != nil || m != magic {
		return 0, fmt.Errorf("hello: %w", ErrFrame)
	}
	if v != Version {
		return 0, fmt.Errorf("hello: peer speaks version %d, we speak %d (upgrade fcvm and the guest image together): %w", v, Version, ErrVersion)
	}
	return f, nil
}
