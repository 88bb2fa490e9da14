package fusepipe

import (
	"bytes"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// overrideXattr holds the guest's view of a host file's owner, group and
// mode, in the format rootless podman and fuse-overlayfs use, so a
// directory shared with both reads the same. The host file itself stays
// owned by the server's user with a mode that grants nothing the guest
// asked for (see hostPerm).
const overrideXattr = "user.containers.override_stat"

// hostView is the view of a host file that carries no override.
func hostView(st *unix.Stat_t) view {
	return view{uid: st.Uid, gid: st.Gid, mode: st.Mode & (unix.S_IFMT | 0o7777), rdev: uint32(st.Rdev)}
}

// overrideTypes maps the override's type field to S_IFMT bits and the
// host type that may carry it. FIFOs, sockets and device nodes the guest
// makes are empty regular files on the host: a regular file is the only
// other kind that carries user xattrs, the guest kernel runs FIFOs and
// sockets itself, and Mount's mount is nodev, so a device node there
// opens nothing in any guest (not even one that shares the directory
// with the guest that made it).
var overrideTypes = map[string]struct{ guest, host uint32 }{
	"file":   {unix.S_IFREG, unix.S_IFREG},
	"dir":    {unix.S_IFDIR, unix.S_IFDIR},
	"pipe":   {unix.S_IFIFO, unix.S_IFREG},
	"socket": {unix.S_IFSOCK, unix.S_IFREG},
	"char":   {unix.S_IFCHR, unix.S_IFREG}, // "char-MAJOR-MINOR"
	"block":  {unix.S_IFBLK, unix.S_IFREG}, // "block-MAJOR-MINOR"
}

func typeName(v view) string {
	switch v.mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFIFO:
		return "pipe"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "char-" + devString(v.rdev)
	case unix.S_IFBLK:
		return "block-" + devString(v.rdev)
	}
	return "file"
}

// FUSE carries device numbers in the kernel's 32-bit encoding
// (new_encode_dev): 12 bits of major, 20 of minor.
func devMajor(d uint32) uint32             { return d & 0xfff00 >> 8 }
func devMinor(d uint32) uint32             { return d&0xff | d>>12&0xfff00 }
func encodeDev(major, minor uint32) uint32 { return minor&0xff | major<<8 | (minor&^0xff)<<12 }

func devString(d uint32) string {
	return strconv.FormatUint(uint64(devMajor(d)), 10) + "-" + strconv.FormatUint(uint64(devMinor(d)), 10)
}

// parseDevType reads "char-M-m" or "block-M-m".
func parseDevType(s string) (typ string, rdev uint32, ok bool) {
	f := strings.Split(s, "-")
	if len(f) != 3 || (f[0] != "char" && f[0] != "block") {
		return s, 0, len(f) == 1
	}
	major, err1 := strconv.ParseUint(f[1], 10, 12)
	minor, err2 := strconv.ParseUint(f[2], 10, 20)
	if err1 != nil || err2 != nil {
		return "", 0, false
	}
	return f[0], encodeDev(uint32(major), uint32(minor)), true
}

// formatOverride writes v as "UID:GID:0MODE:TYPE".
func formatOverride(v view) []byte {
	b := strconv.AppendUint(nil, uint64(v.uid), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(v.gid), 10)
	b = append(b, ':', '0')
	b = strconv.AppendUint(b, uint64(v.mode&0o7777), 8)
	b = append(b, ':')
	return append(b, typeName(v)...)
}

// parseOverride reads "UID:GID:MODE[:TYPE]" for a host file of type
// hostType. Anything malformed, or a type the host file cannot stand for,
// is ignored: the guest then sees the host's own stat.
func parseOverride(b []byte, hostType uint32) (view, bool) {
	f := strings.Split(string(bytes.TrimRight(b, "\x00\n")), ":")
	if len(f) != 3 && len(f) != 4 {
		return view{}, false
	}
	uid, err1 := strconv.ParseUint(f[0], 10, 32)
	gid, err2 := strconv.ParseUint(f[1], 10, 32)
	mode, err3 := strconv.ParseUint(f[2], 8, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return view{}, false
	}
	typ, rdev := hostType, uint32(0)
	if len(f) == 4 {
		name, dev, ok := parseDevType(f[3])
		t, known := overrideTypes[name]
		if !ok || !known || t.host != hostType {
			return view{}, false
		}
		typ, rdev = t.guest, dev
	}
	return view{uid: uint32(uid), gid: uint32(gid), mode: typ | uint32(mode)&0o7777, rdev: rdev}, true
}

// carriesOverride reports whether host files of this type can hold the
// xattr: Linux allows user xattrs on regular files and directories only.
func carriesOverride(hostType uint32) bool {
	return hostType == unix.S_IFREG || hostType == unix.S_IFDIR
}

// procPath names the inode behind fd, O_PATH or not, for the xattr calls
// that have no descriptor form for O_PATH descriptors.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// readView returns the guest's view of the host file fd whose stat is st,
// and whether it came from an override.
func readView(fd int, st *unix.Stat_t) (view, bool) {
	if carriesOverride(st.Mode & unix.S_IFMT) {
		var buf [64]byte
		if n, err := unix.Getxattr(procPath(fd), overrideXattr, buf[:]); err == nil {
			if v, ok := parseOverride(buf[:n], st.Mode&unix.S_IFMT); ok {
				return v, true
			}
		}
	}
	return hostView(st), false
}

// view returns the guest's view of n, whose host stat is st, and whether
// it came from an override. Reading the override costs a path walk
// through /proc (no xattr call takes an O_PATH descriptor), so the last
// one read is trusted while the inode's ctime has not moved: chmod, chown
// and xattr changes all move it. This server's own changes drop it
// (dropView), as ctime may not move within one clock tick.
func (n *node) view(st *unix.Stat_t) (view, bool) {
	ctime := Timespec{st.Ctim.Sec, uint32(st.Ctim.Nsec)}
	n.viewMu.Lock()
	defer n.viewMu.Unlock()
	if n.viewOK && n.viewCtime == ctime {
		return n.cached, n.cachedHad
	}
	v, had := readView(n.ref.fd, st)
	n.viewOK, n.viewCtime, n.cached, n.cachedHad = true, ctime, v, had
	return v, had
}

func (n *node) dropView() {
	n.viewMu.Lock()
	n.viewOK = false
	n.viewMu.Unlock()
}

// writeView records v for the host file fd (whose stat is st) and gives
// the host file the harmless mode standing for v. An override is written
// only where the host's own stat would not say the same, so a root guest
// on a server running as root leaves no xattrs behind.
func writeView(fd int, st *unix.Stat_t, v view, had bool) error {
	hostType := st.Mode & unix.S_IFMT
	if !carriesOverride(hostType) {
		return syscall.EOPNOTSUPP
	}
	perm := hostPerm(v.mode, hostType == unix.S_IFDIR)
	// The mode first: writing a user xattr needs write permission, even
	// for the owner, and the new mode always grants it.
	if st.Mode&0o7777 != perm {
		if err := unix.Fchmodat(unix.AT_FDCWD, procPath(fd), perm, 0); err != nil {
			return err
		}
	}
	switch {
	case v != view{uid: st.Uid, gid: st.Gid, mode: hostType | perm, rdev: uint32(st.Rdev)}:
		return unix.Setxattr(procPath(fd), overrideXattr, formatOverride(v), 0)
	case had:
		if err := unix.Removexattr(procPath(fd), overrideXattr); err != nil && err != unix.ENODATA {
			return err
		}
	}
	return nil
}

// hostPerm is the host mode standing for guest mode m: the guest's
// read, write and execute bits, never set-user-ID, set-group-ID or
// sticky, and always enough for the server's own user to read and write
// the file (and search the directory).
func hostPerm(m uint32, dir bool) uint32 {
	p := m&0o777 | 0o600
	if dir {
		p |= 0o700
	}
	return p
}

// guestXattrWritable reports whether the guest may set (or, with remove,
// remove) the xattr name on a host file. Only user.* xattrs reach the
// host: security.* and trusted.* carry privileges (file capabilities,
// labels) and the override is the server's own record. Removing
// security.capability is allowed because the guest kernel does it on a
// write, and dropping a capability grants nothing.
func guestXattrWritable(name string, remove bool) bool {
	switch {
	case name == overrideXattr:
		return false
	case strings.HasPrefix(name, "user."):
		return true
	case remove && name == "security.capability":
		return true
	}
	return false
}

// hideOverride drops the override's name from a listxattr result.
func hideOverride(list []byte) []byte {
	out := list[:0]
	for len(list) > 0 {
		i := bytes.IndexByte(list, 0)
		if i < 0 {
			i = len(list) - 1
		}
		name := list[:i+1]
		list = list[i+1:]
		if string(name[:len(name)-1]) != overrideXattr {
			out = append(out, name...)
		}
	}
	return out
}

// mayOpen is open(2)'s permission check for guest user u on a file the
// guest sees as a. The guest kernel makes it itself everywhere except for
// a CREATE that finds the name already taken (the kernel believes it made
// the file). u's supplementary groups are not known here, so only its
// primary group counts: at worst a member of a secondary group is
// refused.
func mayOpen(u Owner, a *Attr, flags int) bool {
	if u.UID == 0 {
		return true
	}
	var want uint32
	switch flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		want = 4
	case unix.O_WRONLY:
		want = 2
	default:
		want = 6
	}
	if flags&unix.O_TRUNC != 0 {
		want |= 2
	}
	perm := a.Mode & 7
	switch {
	case u.UID == a.UID:
		perm = a.Mode >> 6 & 7
	case u.GID == a.GID:
		perm = a.Mode >> 3 & 7
	}
	return perm&want == want
}
