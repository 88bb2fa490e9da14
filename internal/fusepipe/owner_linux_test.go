package fusepipe

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestOverrideFormat(t *testing.T) {
	for _, tc := range []struct {
		in       string
		hostType uint32
		want     view
		ok       bool
	}{
		{"1000:1011:0644:file", unix.S_IFREG, view{1000, 1011, unix.S_IFREG | 0o644, 0}, true},
		{"0:0:04755:file", unix.S_IFREG, view{0, 0, unix.S_IFREG | 0o4755, 0}, true},
		{"1001:1012:0755:dir", unix.S_IFDIR, view{1001, 1012, unix.S_IFDIR | 0o755, 0}, true},
		{"5:6:0600:pipe", unix.S_IFREG, view{5, 6, unix.S_IFIFO | 0o600, 0}, true},
		{"5:6:0600:socket", unix.S_IFREG, view{5, 6, unix.S_IFSOCK | 0o600, 0}, true},
		// fuse-overlayfs' older form has no type.
		{"7:8:0700", unix.S_IFDIR, view{7, 8, unix.S_IFDIR | 0o700, 0}, true},
		{"7:8:0700\x00", unix.S_IFREG, view{7, 8, unix.S_IFREG | 0o700, 0}, true},
		// Device nodes are regular files on the host.
		{"0:0:0666:char-1-3", unix.S_IFREG, view{0, 0, unix.S_IFCHR | 0o666, encodeDev(1, 3)}, true},
		{"6:0:0660:block-259-1048575", unix.S_IFREG, view{6, 0, unix.S_IFBLK | 0o660, encodeDev(259, 1<<20-1)}, true},
		{"0:0:0666:char-4096-0", unix.S_IFREG, view{}, false},
		{"0:0:0666:char-1", unix.S_IFREG, view{}, false},
		{"0:0:0666:tty-1-1", unix.S_IFREG, view{}, false},
		{"0:0:0666:char-1-3", unix.S_IFCHR, view{}, false},
		// A type must fit the host file.
		{"0:0:0755:dir", unix.S_IFREG, view{}, false},
		{"0:0:0644:file", unix.S_IFDIR, view{}, false},
		{"x:0:0644", unix.S_IFREG, view{}, false},
		{"0:0:9", unix.S_IFREG, view{}, false},
		{"0:0", unix.S_IFREG, view{}, false},
		{"4294967296:0:0644", unix.S_IFREG, view{}, false},
	} {
		got, ok := parseOverride([]byte(tc.in), tc.hostType)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseOverride(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		if ok && len(strings.Split(tc.in, ":")) == 4 && string(formatOverride(got)) != tc.in {
			t.Errorf("formatOverride(%+v) = %q, want %q", got, formatOverride(got), tc.in)
		}
	}
	if got := hideOverride([]byte("user.a\x00" + overrideXattr + "\x00security.x\x00")); string(got) != "user.a\x00security.x\x00" {
		t.Errorf("hideOverride: %q", got)
	}
}

// hostStat is the host's own view of a file in the share.
func hostStat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	check(t, unix.Lstat(path, &st))
	return st
}

// noHostPrivilege fails if anything under dir carries a set-ID bit, a
// sticky file, a file capability or a trusted xattr on the host, or is
// owned by anyone but the server's user (this process's).
func noHostPrivilege(t *testing.T, dir string) {
	t.Helper()
	noHostPrivilegeAs(t, dir, uint32(os.Getuid()), uint32(os.Getgid()))
}

func noHostPrivilegeAs(t *testing.T, dir string, uid, gid uint32) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if p != dir && (st.Uid != uid || st.Gid != gid) {
			t.Errorf("host %s owned by %d:%d", p, st.Uid, st.Gid)
		}
		if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 || (!fi.IsDir() && st.Mode&unix.S_ISVTX != 0) {
			t.Errorf("host %s has mode %o", p, st.Mode)
		}
		buf := make([]byte, 4096)
		n, _ := unix.Llistxattr(p, buf)
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if strings.HasPrefix(name, "security.capability") || strings.HasPrefix(name, "trusted.") {
				t.Errorf("host %s has xattr %s", p, name)
			}
		}
		return nil
	})
}

// A hostile guest makes a set-UID root binary and gives it capabilities:
// nothing of it reaches the host.
func TestNoSetIDOnHost(t *testing.T) {
	h := newHostile(t, false)
	root := Owner{UID: 0, GID: 0}
	user := Owner{UID: 1000, GID: 1000}
	rp, e := h.do(&Request{Op: OpCreate, Node: rootNode, Name: "suid", Flags: unix.O_RDWR, Mode: 0o6755, Caller: user})
	if e != 0 {
		t.Fatalf("create: %v", e)
	}
	file := rp.Entry.Node
	if a := rp.Entry.Attr; a.Mode != unix.S_IFREG|0o6755 || a.UID != 1000 || a.GID != 1000 {
		t.Errorf("guest sees %o %d:%d after create", a.Mode, a.UID, a.GID)
	}
	h.do(&Request{Op: OpWrite, Fh: rp.Fh, Data: []byte("\x7fELF")})
	rp, e = h.do(&Request{Op: OpSetattr, Node: file, Valid: SetMode | SetUID | SetGID, Mode: 0o4755, UID: 0, GID: 0})
	if e != 0 {
		t.Fatalf("chmod 4755 chown 0:0: %v", e)
	}
	if a := rp.Attr; a.Mode != unix.S_IFREG|0o4755 || a.UID != 0 || a.GID != 0 {
		t.Errorf("guest sees %o %d:%d after chown", a.Mode, a.UID, a.GID)
	}
	for _, rq := range []*Request{
		{Op: OpMkdir, Node: rootNode, Name: "sgid", Mode: 0o3777, Caller: root},
		{Op: OpMknod, Node: rootNode, Name: "fifo", Mode: unix.S_IFIFO | 0o4777, Caller: root},
		{Op: OpMknod, Node: rootNode, Name: "sock", Mode: unix.S_IFSOCK | 0o6777, Caller: root},
		{Op: OpMknod, Node: rootNode, Name: "plain", Mode: unix.S_IFREG | 0o6777, Caller: root},
		{Op: OpSymlink, Node: rootNode, Name: "lnk", Name2: "suid", Caller: user},
	} {
		if _, e := h.do(rq); e != 0 {
			t.Errorf("%v %s: %v", rq.Op, rq.Name, e)
		}
	}
	h.refuse("rename with a whiteout", &Request{Op: OpRename, Node: rootNode, Name: "plain", Node2: rootNode, Name2: "plain2", Flags: unix.RENAME_WHITEOUT}, syscall.EINVAL)
	capv := []byte{0x01, 0x00, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, name := range []string{"security.capability", "trusted.overlay.opaque", "security.selinux", "security.ima", overrideXattr, "system.posix_acl_access"} {
		h.refuse("setxattr "+name, &Request{Op: OpSetxattr, Node: file, Name: name, Data: capv}, syscall.EPERM)
		if name != "security.capability" {
			h.refuse("removexattr "+name, &Request{Op: OpRemovexattr, Node: file, Name: name}, syscall.EPERM)
		}
	}
	// The override is the server's: invisible to the guest.
	h.refuse("getxattr override", &Request{Op: OpGetxattr, Node: file, Name: overrideXattr, Size: 256}, syscall.ENODATA)
	if _, e := h.do(&Request{Op: OpSetxattr, Node: file, Name: "user.mine", Data: []byte("1")}); e != 0 {
		t.Errorf("setxattr user.mine: %v", e)
	}
	rp, e = h.do(&Request{Op: OpListxattr, Node: file, Size: 4096})
	if e != 0 || string(rp.Data) != "user.mine\x00" {
		t.Errorf("listxattr: %q, %v", rp.Data, e)
	}
	rp, e = h.do(&Request{Op: OpListxattr, Node: file})
	if e != 0 || rp.Size != uint32(len("user.mine\x00")) {
		t.Errorf("listxattr size: %d, %v", rp.Size, e)
	}

	st := hostStat(t, filepath.Join(h.share, "suid"))
	if st.Mode != unix.S_IFREG|0o755 {
		t.Errorf("host mode %o, want 100755", st.Mode)
	}
	if got := hostOverride(t, filepath.Join(h.share, "suid")); got != "0:0:04755:file" {
		t.Errorf("override %q", got)
	}
	if got := hostOverride(t, filepath.Join(h.share, "sock")); got != "0:0:06777:socket" {
		t.Errorf("socket override %q", got)
	}
	noHostPrivilege(t, h.share)
}

// Through a real mount, as root in the guest: what the guest sets is what
// it sees, what the host gets is harmless.
func TestOwnershipThroughMount(t *testing.T) {
	s := newShare(t, shareOpts{})
	m := s.mnt
	p := filepath.Join(m, "tool")
	check(t, os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755))
	check(t, os.Chown(p, 0, 0))
	check(t, unix.Chmod(p, 0o4755))
	st := hostStat(t, p)
	if st.Mode != unix.S_IFREG|0o4755 || st.Uid != 0 {
		t.Fatalf("guest sees %o uid %d", st.Mode, st.Uid)
	}
	mustErrno(t, unix.Setxattr(p, "security.capability", []byte{1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0), syscall.EPERM)
	mustErrno(t, unix.Setxattr(p, "trusted.x", []byte("1"), 0), syscall.EPERM)
	mustErrno(t, unix.Setxattr(p, overrideXattr, []byte("0:0:04777"), 0), syscall.EPERM)
	buf := make([]byte, 256)
	_, err := unix.Getxattr(p, overrideXattr, buf)
	mustErrno(t, err, syscall.ENODATA)
	n, err := unix.Listxattr(p, buf)
	check(t, err)
	if strings.Contains(string(buf[:n]), overrideXattr) {
		t.Errorf("listxattr shows the override: %q", buf[:n])
	}
	check(t, os.Mkdir(filepath.Join(m, "shared"), 0o755))
	check(t, unix.Chmod(filepath.Join(m, "shared"), 0o3777))
	st = hostStat(t, filepath.Join(m, "shared"))
	if st.Mode != unix.S_IFDIR|0o3777 {
		t.Errorf("guest sees dir mode %o", st.Mode)
	}
	// chown 1000:1000 of the set-UID file: the kernel clears set-UID.
	check(t, os.Chown(p, 1000, 1000))
	st = hostStat(t, p)
	if st.Mode&unix.S_ISUID != 0 || st.Uid != 1000 {
		t.Errorf("after chown the guest sees %o uid %d", st.Mode, st.Uid)
	}
	check(t, os.Chown(p, 0, 0))
	check(t, unix.Chmod(p, 0o4755))
	noHostPrivilege(t, s.dir)
	if d := cmp.Diff("0:0:04755:file", hostOverride(t, filepath.Join(s.dir, "tool"))); d != "" {
		t.Errorf("override (-want +got):\n%s", d)
	}
}

// The server as fcvm runs it rootless: an ordinary user. Guest root's
// files are that user's on the host, and chmod and chown work on files
// the user owns whatever their mode, including ones made on the host.
func TestRootlessServer(t *testing.T) {
	const uid, gid = 1000, 1000
	_, dir, mnt, _ := remoteShareAs(t, MountOptions{}, &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{gid}})
	hostOwned := func(p string) {
		t.Helper()
		st := hostStat(t, p)
		if st.Uid != uid || st.Gid != gid || st.Mode&0o7000 != 0 {
			t.Errorf("host %s: %d:%d mode %o", p, st.Uid, st.Gid, st.Mode)
		}
	}
	p := filepath.Join(mnt, "tool")
	check(t, os.WriteFile(p, []byte("x"), 0o644))
	st := hostStat(t, p)
	if st.Uid != 0 || st.Gid != 0 || st.Mode != unix.S_IFREG|0o644 {
		t.Errorf("guest sees %d:%d %o for guest root's file", st.Uid, st.Gid, st.Mode)
	}
	check(t, unix.Chmod(p, 0o444))
	check(t, unix.Chmod(p, 0o4755))
	check(t, os.Chown(p, 0, 0))
	check(t, unix.Chmod(p, 0o4755))
	if st := hostStat(t, p); st.Mode != unix.S_IFREG|0o4755 || st.Uid != 0 {
		t.Errorf("guest sees %o uid %d", st.Mode, st.Uid)
	}
	hostOwned(filepath.Join(dir, "tool"))
	if got := hostOverride(t, filepath.Join(dir, "tool")); got != "0:0:04755:file" {
		t.Errorf("override %q", got)
	}
	// Made on the host, read-only: the guest sees the host's owner and
	// may still take it over.
	hp := filepath.Join(dir, "fromhost")
	check(t, os.WriteFile(hp, []byte("h"), 0o444))
	check(t, os.Chown(hp, uid, gid))
	st = hostStat(t, filepath.Join(mnt, "fromhost"))
	if st.Uid != uid || st.Mode != unix.S_IFREG|0o444 {
		t.Errorf("guest sees the host file as %d %o", st.Uid, st.Mode)
	}
	check(t, os.Chown(filepath.Join(mnt, "fromhost"), 0, 0))
	check(t, os.Mkdir(filepath.Join(mnt, "d"), 0o555))
	check(t, os.Chown(filepath.Join(mnt, "d"), 1234, 1234))
	hostOwned(hp)
	hostOwned(filepath.Join(dir, "d"))
	noHostPrivilegeAs(t, dir, uid, gid)
}

// The server trusts an override it read until the inode's ctime moves;
// one written by someone else (the host, another VM's server, podman)
// shows up at the next GETATTR.
func TestOverrideChangedOnHost(t *testing.T) {
	h := newHostile(t, false)
	p := filepath.Join(h.share, "f")
	check(t, os.WriteFile(p, []byte("x"), 0o644))
	node, _ := h.lookup("f")
	for _, want := range []string{"42:43:0600:file", "7:8:02755:file", ""} {
		if _, e := h.do(&Request{Op: OpGetattr, Node: node}); e != 0 {
			t.Fatal(e)
		}
		// A clock tick apart: ctime moves by ticks on kernels without
		// fine-grained timestamps.
		time.Sleep(10 * time.Millisecond)
		if want == "" {
			check(t, unix.Removexattr(p, overrideXattr))
		} else {
			check(t, unix.Setxattr(p, overrideXattr, []byte(want), 0))
		}
		rp, e := h.do(&Request{Op: OpGetattr, Node: node})
		if e != 0 {
			t.Fatal(e)
		}
		got := string(formatOverride(view{rp.Attr.UID, rp.Attr.GID, rp.Attr.Mode, 0}))
		if want == "" {
			want = fmt.Sprintf("%d:%d:0644:file", os.Getuid(), os.Getgid())
		}
		if got != want {
			t.Errorf("after the host wrote %q the guest sees %q", want, got)
		}
	}
}

// chmod and chown move ctime as on a local disk, also where the change
// lives only in the override or in memory (symlinks), and names longer
// than NAME_MAX fail with ENAMETOOLONG.
func TestChownTouchesCtime(t *testing.T) {
	s := newShare(t, shareOpts{mount: MountOptions{AttrTimeout: -1}})
	f, l := filepath.Join(s.mnt, "f"), filepath.Join(s.mnt, "l")
	check(t, os.WriteFile(f, nil, 0o644))
	check(t, os.Symlink("f", l))
	ctime := func(p string) unix.Timespec {
		t.Helper()
		var st unix.Stat_t
		check(t, unix.Lstat(p, &st))
		return st.Ctim
	}
	for _, step := range []struct {
		name string
		path string
		do   func() error
	}{
		{"lchown of a symlink", l, func() error { return unix.Lchown(l, 123, 456) }},
		{"chown to the same owner", f, func() error { return unix.Chown(f, 0, 0) }},
		{"chmod to the same mode", f, func() error { return unix.Chmod(f, 0o644) }},
	} {
		before := ctime(step.path)
		time.Sleep(20 * time.Millisecond)
		check(t, step.do())
		if after := ctime(step.path); after == before {
			t.Errorf("%s left ctime at %v", step.name, before)
		}
	}
	var st unix.Stat_t
	check(t, unix.Lstat(l, &st))
	if st.Uid != 123 || st.Gid != 456 {
		t.Errorf("symlink owner %d:%d after lchown", st.Uid, st.Gid)
	}
	long := filepath.Join(s.mnt, strings.Repeat("x", 256))
	mustErrno(t, os.WriteFile(long, nil, 0o644), syscall.ENAMETOOLONG)
	_, err := os.Stat(long)
	mustErrno(t, err, syscall.ENAMETOOLONG)
	check(t, os.WriteFile(filepath.Join(s.mnt, strings.Repeat("x", 255)), nil, 0o644))
}
