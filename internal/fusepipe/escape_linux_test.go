package fusepipe

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Escape attempts. The guest kernel never sends most of these, so they are
// made by a hostile guest speaking the wire protocol directly; each must
// fail, and the secret next to the share must stay unread and unchanged.

// hostile is a guest that talks to the server without a kernel in between.
type hostile struct {
	t      *testing.T
	c      *client
	share  string // the shared directory
	secret string // a file outside it
}

const secretText = "outside the share"

func newHostile(t *testing.T, readOnly bool) *hostile {
	return newHostileOpts(t, ServerOptions{ReadOnly: readOnly})
}

func newHostileOpts(t *testing.T, opts ServerOptions) *hostile {
	base := t.TempDir()
	share := filepath.Join(base, "share")
	check(t, os.Mkdir(share, 0o755))
	secret := filepath.Join(base, "secret")
	check(t, os.WriteFile(secret, []byte(secretText), 0o644))
	check(t, os.Mkdir(filepath.Join(base, "outdir"), 0o755))
	check(t, os.WriteFile(filepath.Join(base, "outdir", "secret"), []byte(secretText), 0o644))
	c, stop := serveWire(t, share, opts)
	t.Cleanup(func() {
		stop()
		got, err := os.ReadFile(secret)
		if err != nil || string(got) != secretText {
			t.Errorf("secret now %q, %v", got, err)
		}
		if _, err := os.Stat(filepath.Join(base, "planted")); err == nil {
			t.Errorf("a file was created outside the share")
		}
	})
	return &hostile{t: t, c: c, share: share, secret: secret}
}

// serveWire serves share over a socket pair to a client without a kernel
// in between; stop closes both ends and waits for the server.
func serveWire(t testing.TB, share string, opts ServerOptions) (c *client, stop func()) {
	opts.Log = testLog(t)
	srv, err := NewServer(share, opts)
	if err != nil {
		t.Fatal(err)
	}
	hostEnd, guestEnd := socketPair(t)
	done := make(chan struct{})
	go func() { srv.ServeConn(context.Background(), hostEnd); close(done) }()
	c, err = dial(guestEnd, testLog(t), false, 5*time.Second)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	return c, func() {
		c.close()
		srv.Close()
		<-done
	}
}

func (h *hostile) do(rq *Request) (*Reply, syscall.Errno) {
	return h.c.call(nil, rq)
}

// refuse requires rq to fail (with one of want, if given).
func (h *hostile) refuse(what string, rq *Request, want ...syscall.Errno) {
	h.t.Helper()
	rp, e := h.do(rq)
	if e == 0 {
		h.t.Errorf("%s: succeeded (%+v)", what, rp)
		return
	}
	if len(want) > 0 {
		for _, w := range want {
			if e == w {
				return
			}
		}
		h.t.Errorf("%s: %v, want one of %v", what, e, want)
	}
}

// lookup walks the share from the root.
func (h *hostile) lookup(names ...string) (uint64, syscall.Errno) {
	node := uint64(rootNode)
	for _, n := range names {
		rp, e := h.do(&Request{Op: OpLookup, Node: node, Name: n})
		if e != 0 {
			return 0, e
		}
		node = rp.Entry.Node
	}
	return node, 0
}

// readAll opens node and reads it, failing on any readable secret.
func (h *hostile) readSecret(node uint64) bool {
	rp, e := h.do(&Request{Op: OpOpen, Node: node})
	if e != 0 {
		return false
	}
	defer h.c.notify(&Request{Op: OpRelease, Fh: rp.Fh})
	rd, e := h.do(&Request{Op: OpRead, Fh: rp.Fh, Size: 4096})
	return e == 0 && strings.Contains(string(rd.Data), secretText)
}

var badNames = []string{"..", "../secret", "../../etc/passwd", "/etc/passwd", "a/../../secret", ".", "", "x\x00y", strings.Repeat("n", 256)}

func TestEscapeDotDot(t *testing.T) {
	h := newHostile(t, false)
	check(t, os.WriteFile(filepath.Join(h.share, "f"), nil, 0o644))
	f, _ := h.lookup("f")
	for _, n := range badNames {
		h.refuse("lookup "+n, &Request{Op: OpLookup, Node: rootNode, Name: n})
		h.refuse("create "+n, &Request{Op: OpCreate, Node: rootNode, Name: n, Mode: 0o644, Flags: unix.O_RDWR})
		h.refuse("mkdir "+n, &Request{Op: OpMkdir, Node: rootNode, Name: n, Mode: 0o755})
		h.refuse("mknod "+n, &Request{Op: OpMknod, Node: rootNode, Name: n, Mode: unix.S_IFIFO | 0o644})
		h.refuse("symlink "+n, &Request{Op: OpSymlink, Node: rootNode, Name: n, Name2: "x"})
		h.refuse("link "+n, &Request{Op: OpLink, Node: f, Node2: rootNode, Name: n})
		h.refuse("unlink "+n, &Request{Op: OpUnlink, Node: rootNode, Name: n})
		h.refuse("rmdir "+n, &Request{Op: OpRmdir, Node: rootNode, Name: n})
		h.refuse("rename to "+n, &Request{Op: OpRename, Node: rootNode, Name: "f", Node2: rootNode, Name2: n})
		h.refuse("rename from "+n, &Request{Op: OpRename, Node: rootNode, Name: n, Node2: rootNode, Name2: "g"})
	}
	// Through a real mount, ".." is resolved by the guest kernel, above
	// the mount: it never names anything on the host.
	s := newShare(t, shareOpts{})
	_, err := os.Stat(filepath.Join(s.mnt, "..", "host"))
	check(t, err) // the mount's own parent: the test's directory, as expected
}

func TestEscapeSymlinks(t *testing.T) {
	h := newHostile(t, false)
	check(t, os.Symlink(h.secret, filepath.Join(h.share, "abs")))
	check(t, os.Symlink("../secret", filepath.Join(h.share, "rel")))
	check(t, os.Symlink("../outdir", filepath.Join(h.share, "reldir")))
	check(t, os.Symlink(filepath.Dir(h.secret)+"/outdir", filepath.Join(h.share, "absdir")))
	for _, l := range []string{"abs", "rel", "reldir", "absdir"} {
		n, e := h.lookup(l)
		if e != 0 {
			t.Fatalf("lookup %s: %v", l, e)
		}
		rp, e := h.do(&Request{Op: OpGetattr, Node: n})
		if e != 0 || rp.Attr.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("getattr %s: %v mode %o: the link itself, not its target", l, e, rp.Attr.Mode)
		}
		if h.readSecret(n) {
			t.Errorf("read the secret through %s", l)
		}
		h.refuse("lookup through "+l, &Request{Op: OpLookup, Node: n, Name: "secret"})
		h.refuse("readdir "+l, &Request{Op: OpReadDir, Node: n, Size: 4096})
		h.refuse("create through "+l, &Request{Op: OpCreate, Node: n, Name: "planted", Mode: 0o644})
		h.refuse("truncate "+l, &Request{Op: OpSetattr, Node: n, Valid: SetSize})
		h.refuse("getxattr "+l, &Request{Op: OpGetxattr, Node: n, Name: "user.x", Size: 64})
		h.refuse("setxattr "+l, &Request{Op: OpSetxattr, Node: n, Name: "user.x", Data: []byte("1")})
		rd, e := h.do(&Request{Op: OpReadlink, Node: n})
		if e != 0 || len(rd.Data) == 0 {
			t.Errorf("readlink %s: %v", l, e)
		}
	}
	// Creating files through a dangling link to outside must not plant
	// anything there.
	check(t, os.Symlink("../planted", filepath.Join(h.share, "dangling")))
	h.refuse("create over dangling link", &Request{Op: OpCreate, Node: rootNode, Name: "dangling", Mode: 0o644, Flags: unix.O_RDWR})

	// Through a real mount the guest kernel follows links itself: a
	// relative link climbing out of the mount lands above the mount point,
	// not next to the host directory.
	s := newShare(t, shareOpts{})
	check(t, os.WriteFile(filepath.Join(filepath.Dir(s.dir), "secret-beside-host"), []byte(secretText), 0o644))
	check(t, os.Symlink("../../secret-beside-host", filepath.Join(s.dir, "up")))
	if got, err := os.ReadFile(filepath.Join(s.mnt, "up")); err == nil {
		t.Errorf("read %q through a relative link out of the share", got)
	}
}

func TestEscapeSymlinkSwap(t *testing.T) {
	h := newHostile(t, false)
	d := filepath.Join(h.share, "d")
	check(t, os.Mkdir(d, 0o755))
	check(t, os.WriteFile(filepath.Join(d, "secret"), []byte("inside"), 0o644))
	outdir := filepath.Join(filepath.Dir(h.share), "outdir")

	// The host swaps d between a directory and a symlink to outside
	// while the guest walks d/secret over and over.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			os.Rename(d, d+".real")
			os.Symlink(outdir, d)
			os.Remove(d)
			os.Rename(d+".real", d)
		}
	})
	deadline := time.Now().Add(2 * time.Second)
	var walks, reads int
	for time.Now().Before(deadline) {
		n, e := h.lookup("d", "secret")
		walks++
		if e != 0 {
			continue
		}
		if h.readSecret(n) {
			t.Error("read the outside secret through a swapped symlink")
			break
		}
		reads++
		h.c.notify(&Request{Op: OpForget, Forgets: []Forget{{Node: n, N: 1}}})
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d walks, %d reached a file", walks, reads)
}

func TestEscapeForgedIDs(t *testing.T) {
	h := newHostile(t, false)
	check(t, os.WriteFile(filepath.Join(h.share, "f"), []byte("x"), 0o644))
	for _, id := range []uint64{0, 2, 999, 1 << 40, ^uint64(0)} {
		h.refuse("getattr forged node", &Request{Op: OpGetattr, Node: id}, syscall.ESTALE)
		h.refuse("rename into forged node", &Request{Op: OpRename, Node: rootNode, Name: "f", Node2: id, Name2: "f"}, syscall.ESTALE)
		h.refuse("link forged node", &Request{Op: OpLink, Node: id, Node2: rootNode, Name: "g"}, syscall.ESTALE)
		h.refuse("read forged handle", &Request{Op: OpRead, Fh: id, Size: 10}, syscall.EBADF)
		h.refuse("write forged handle", &Request{Op: OpWrite, Fh: id, Data: []byte("x")}, syscall.EBADF)
	}
	// Forgetting the root or more than was looked up changes nothing.
	h.c.notify(&Request{Op: OpForget, Forgets: []Forget{{Node: rootNode, N: 100}}})
	if _, e := h.lookup("f"); e != 0 {
		t.Fatalf("lookup after forgetting root: %v", e)
	}
	// Hard links are made between nodes; no node is outside. Through the
	// mount, a link from outside the mount is the guest kernel's EXDEV.
	s := newShare(t, shareOpts{})
	mustErrno(t, os.Link(h.secret, filepath.Join(s.mnt, "stolen")), syscall.EXDEV)
	mustErrno(t, os.Rename(filepath.Join(s.mnt, "."), filepath.Join(filepath.Dir(s.mnt), "moved")), syscall.EBUSY)
	check(t, os.WriteFile(filepath.Join(s.mnt, "f"), nil, 0o644))
	mustErrno(t, os.Rename(filepath.Join(s.mnt, "f"), filepath.Join(filepath.Dir(s.mnt), "moved")), syscall.EXDEV)
}

func TestEscapeDevicesAndFIFOs(t *testing.T) {
	h := newHostile(t, false)
	// A guest's device node is an empty regular file on the host; only
	// the override says what the guest sees.
	for _, dev := range []struct {
		name, override string
		mode           uint32
		rdev           uint32
	}{
		{"null", "0:0:0666:char-1-3", unix.S_IFCHR | 0o666, encodeDev(1, 3)},
		{"sda", "0:0:04660:block-8-0", unix.S_IFBLK | 0o4660, encodeDev(8, 0)},
	} {
		rp, e := h.do(&Request{Op: OpMknod, Node: rootNode, Name: dev.name, Mode: dev.mode, Rdev: dev.rdev})
		if e != 0 {
			t.Fatalf("mknod %s: %v", dev.name, e)
		}
		if a := rp.Entry.Attr; a.Mode != dev.mode || a.Rdev != dev.rdev {
			t.Errorf("guest sees %s as %o rdev %#x", dev.name, a.Mode, a.Rdev)
		}
		p := filepath.Join(h.share, dev.name)
		if st := hostStat(t, p); st.Mode != unix.S_IFREG|0o660|dev.mode&0o006 || st.Rdev != 0 || st.Size != 0 {
			t.Errorf("host %s: mode %o rdev %#x size %d", dev.name, st.Mode, st.Rdev, st.Size)
		}
		if got := hostOverride(t, p); got != dev.override {
			t.Errorf("host %s override %q, want %q", dev.name, got, dev.override)
		}
	}
	noHostPrivilege(t, h.share)
	check(t, unix.Mknod(filepath.Join(h.share, "hostnull"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	check(t, unix.Mkfifo(filepath.Join(h.share, "fifo"), 0o666))
	for _, n := range []string{"hostnull", "fifo"} {
		node, e := h.lookup(n)
		if e != 0 {
			t.Fatal(e)
		}
		// Opening would block the server (FIFO) or reach a host device.
		h.refuse("open "+n, &Request{Op: OpOpen, Node: node, Flags: unix.O_RDWR}, syscall.EACCES)
	}
}

func TestEscapeReadOnly(t *testing.T) {
	h := newHostile(t, true)
	f := filepath.Join(h.share, "f")
	check(t, os.WriteFile(f, []byte("keep"), 0o644))
	check(t, os.Mkdir(filepath.Join(h.share, "d"), 0o755))
	node, _ := h.lookup("f")
	dir, _ := h.lookup("d")
	rp, e := h.do(&Request{Op: OpOpen, Node: node, Flags: unix.O_RDONLY})
	if e != 0 {
		t.Fatal(e)
	}
	fh := rp.Fh
	for _, rq := range []*Request{
		{Op: OpOpen, Node: node, Flags: unix.O_WRONLY},
		{Op: OpOpen, Node: node, Flags: unix.O_RDWR},
		{Op: OpOpen, Node: node, Flags: unix.O_RDONLY | unix.O_TRUNC},
		{Op: OpWrite, Fh: fh, Data: []byte("overwrite")},
		{Op: OpCreate, Node: rootNode, Name: "new", Mode: 0o644},
		{Op: OpMkdir, Node: rootNode, Name: "new", Mode: 0o755},
		{Op: OpMknod, Node: rootNode, Name: "new", Mode: unix.S_IFIFO | 0o644},
		{Op: OpSymlink, Node: rootNode, Name: "new", Name2: "f"},
		{Op: OpLink, Node: node, Node2: rootNode, Name: "new"},
		{Op: OpUnlink, Node: rootNode, Name: "f"},
		{Op: OpRmdir, Node: rootNode, Name: "d"},
		{Op: OpRename, Node: rootNode, Name: "f", Node2: dir, Name2: "f"},
		{Op: OpSetattr, Node: node, Valid: SetSize},
		{Op: OpSetattr, Node: node, Valid: SetMode, Mode: 0o777},
		{Op: OpSetattr, Node: node, Valid: SetMtimeNow},
		{Op: OpSetxattr, Node: node, Name: "user.x", Data: []byte("1")},
		{Op: OpRemovexattr, Node: node, Name: "user.x"},
		{Op: OpFallocate, Fh: fh, Len: 1 << 20},
		{Op: OpCopyFileRange, Fh: fh, Fh2: fh, Off2: 4, Len: 4},
	} {
		h.refuse(rq.Op.String(), rq, syscall.EROFS)
	}
	got, _ := os.ReadFile(f)
	st, _ := os.Stat(f)
	if string(got) != "keep" || st.Mode().Perm() != 0o644 {
		t.Fatalf("read-only file changed: %q %v", got, st.Mode())
	}
}
