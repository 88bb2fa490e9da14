package fusepipe

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What one connection may cost the host, and how blocking requests may
// not starve the rest.

// openFds counts this process's descriptors.
func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// doWithin runs rq and fails unless the server answers within d.
func (h *hostile) doWithin(d time.Duration, rq *Request) (*Reply, syscall.Errno) {
	h.t.Helper()
	type res struct {
		rp *Reply
		e  syscall.Errno
	}
	c := make(chan res, 1)
	go func() { rp, e := h.do(rq); c <- res{rp, e} }()
	select {
	case r := <-c:
		return r.rp, r.e
	case <-time.After(d):
		h.t.Fatalf("%v %s: no answer within %v", rq.Op, rq.Name, d)
	}
	return nil, 0
}

// CREATE without O_EXCL on a taken name opens what is there only as OPEN
// would: never a FIFO (the server would block for ever), never a device.
func TestCreateOverExisting(t *testing.T) {
	h := newHostile(t, false)
	check(t, unix.Mkfifo(filepath.Join(h.share, "fifo"), 0o666))
	check(t, unix.Mknod(filepath.Join(h.share, "zero"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))))
	check(t, unix.Mknod(filepath.Join(h.share, "sock"), unix.S_IFSOCK|0o666, 0))
	check(t, os.Mkdir(filepath.Join(h.share, "dir"), 0o755))
	check(t, os.Symlink("/dev/zero", filepath.Join(h.share, "lnk")))
	for _, name := range []string{"fifo", "zero", "sock", "dir", "lnk"} {
		for _, flags := range []uint32{unix.O_WRONLY, unix.O_RDWR, unix.O_RDONLY} {
			rp, e := h.doWithin(3*time.Second, &Request{Op: OpCreate, Node: rootNode, Name: name, Flags: flags, Mode: 0o644})
			if e == 0 {
				t.Errorf("create over %s (flags %#o) opened it: %+v", name, flags, rp)
			}
		}
	}
	// A guest-made FIFO (a regular file on the host) is not opened
	// either.
	if _, e := h.do(&Request{Op: OpMknod, Node: rootNode, Name: "gfifo", Mode: unix.S_IFIFO | 0o666}); e != 0 {
		t.Fatal(e)
	}
	h.refuse("create over a guest FIFO", &Request{Op: OpCreate, Node: rootNode, Name: "gfifo", Flags: unix.O_RDWR, Mode: 0o644}, syscall.EACCES)

	// A regular file is opened, truncated if asked, and only for a
	// caller the guest kernel would have let open it.
	check(t, os.WriteFile(filepath.Join(h.share, "f"), []byte("content"), 0o600))
	h.refuse("create over a 0600 root file as uid 1000", &Request{Op: OpCreate, Node: rootNode, Name: "f", Flags: unix.O_RDWR, Mode: 0o644, Caller: Owner{1000, 1000}}, syscall.EACCES)
	rp, e := h.do(&Request{Op: OpCreate, Node: rootNode, Name: "f", Flags: unix.O_RDWR | unix.O_TRUNC, Mode: 0o644})
	if e != 0 {
		t.Fatalf("create over a regular file: %v", e)
	}
	if rp.Fh == 0 || rp.Entry.Node == 0 || rp.Entry.Attr.Mode != unix.S_IFREG|0o600 {
		t.Errorf("create over a regular file: %+v", rp)
	}
	if got, _ := os.ReadFile(filepath.Join(h.share, "f")); len(got) != 0 {
		t.Errorf("O_TRUNC left %q", got)
	}
	h.refuse("exclusive create over a regular file", &Request{Op: OpCreate, Node: rootNode, Name: "f", Flags: unix.O_RDWR | unix.O_EXCL, Mode: 0o644}, syscall.EEXIST)
}

// 4000 hostile requests of each kind that used to cost a descriptor
// each stay within the caps.
func TestHostileResourceCaps(t *testing.T) {
	opts := ServerOptions{MaxNodes: 64, MaxHandles: 32, MaxLockOwners: 16}
	h := newHostileOpts(t, opts)
	for i := range 200 {
		check(t, os.WriteFile(filepath.Join(h.share, fmt.Sprint(i)), []byte("x"), 0o644))
	}
	before := openFds(t)
	var nodes []uint64
	errs := map[string]map[syscall.Errno]int{}
	count := func(what string, e syscall.Errno) {
		if errs[what] == nil {
			errs[what] = map[syscall.Errno]int{}
		}
		errs[what][e]++
	}
	for i := range 4000 {
		rp, e := h.do(&Request{Op: OpLookup, Node: rootNode, Name: fmt.Sprint(i % 200)})
		count("lookup", e)
		if e == 0 && len(nodes) < 200 {
			nodes = append(nodes, rp.Entry.Node)
		}
	}
	for range 4000 {
		_, e := h.do(&Request{Op: OpReadDir, Node: rootNode, Size: 4096})
		count("readdir", e)
	}
	for i := range 4000 {
		_, e := h.do(&Request{Op: OpOpen, Node: nodes[i%len(nodes)], Flags: unix.O_RDONLY})
		count("open", e)
	}
	for i := range 4000 {
		_, e := h.do(&Request{Op: OpSetlk, Node: nodes[i%len(nodes)], Owner: uint64(i + 1), Lock: Lock{Type: unix.F_RDLCK, End: 1<<63 - 1}})
		count("setlk", e)
	}
	for i := range 4000 {
		_, e := h.do(&Request{Op: OpCreate, Node: rootNode, Name: fmt.Sprint("new", i), Flags: unix.O_RDWR, Mode: 0o644})
		count("create", e)
	}
	after := openFds(t)
	t.Logf("descriptors %d before, %d after 20000 requests; results %v", before, after, errs)
	limit := opts.MaxNodes + opts.MaxHandles + opts.MaxLockOwners + 4
	if after-before > limit {
		t.Errorf("descriptors grew by %d, caps allow %d", after-before, limit)
	}
	if left, _ := filepath.Glob(filepath.Join(h.share, "new*")); len(left) != errs["create"][0] {
		t.Errorf("%d files left on the host by %d successful creates", len(left), errs["create"][0])
	}
	if errs["lookup"][syscall.ENFILE] == 0 || errs["readdir"][syscall.ENFILE] == 0 || errs["setlk"][syscall.ENOLCK] == 0 {
		t.Errorf("caps never refused anything: %v", errs)
	}
	// The connection still works; forgetting gives room back.
	var fs []Forget
	for _, n := range nodes {
		fs = append(fs, Forget{Node: n, N: 1 << 20})
	}
	h.c.notify(&Request{Op: OpForget, Forgets: fs})
	if _, e := h.doWithin(3*time.Second, &Request{Op: OpLookup, Node: rootNode, Name: "199"}); e != 0 {
		t.Errorf("lookup after forgetting: %v", e)
	}
}

// A READDIR asking for 4 GiB gets a reply that fits a frame.
func TestReadDirReplyCap(t *testing.T) {
	h := newHostile(t, false)
	long := strings.Repeat("n", 240)
	for i := range 5000 {
		f, err := os.Create(filepath.Join(h.share, fmt.Sprintf("%s%05d", long, i)))
		check(t, err)
		f.Close()
	}
	rp, e := h.doWithin(10*time.Second, &Request{Op: OpReadDir, Node: rootNode, Size: ^uint32(0), Flags: 1})
	if e != 0 {
		t.Fatalf("readdir: %v (%v)", e, h.c.Err())
	}
	if n := len(AppendReply(nil, rp)); n > MaxFrame {
		t.Errorf("reply of %d bytes", n)
	}
	if len(rp.Dirents) == 0 || len(rp.Dirents) >= 5002 {
		t.Errorf("%d entries in one reply", len(rp.Dirents))
	}
	if _, e := h.doWithin(3*time.Second, &Request{Op: OpPing}); e != 0 {
		t.Fatalf("ping after a big readdir: %v", e)
	}
}

// 300 guest processes waiting for a lock the host holds: the connection
// still answers pings and everything else, and the waiters can be
// interrupted.
func TestLockWaitsKeepConnectionAlive(t *testing.T) {
	h := newHostile(t, false)
	p := filepath.Join(h.share, "f")
	check(t, os.WriteFile(p, []byte("x"), 0o644))
	hf, err := os.OpenFile(p, os.O_RDWR, 0)
	check(t, err)
	defer hf.Close()
	check(t, unix.FcntlFlock(hf.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}))
	node, e := h.lookup("f")
	if e != 0 {
		t.Fatal(e)
	}
	const waiters = 300
	cancel := make(chan struct{})
	results := make(chan syscall.Errno, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() {
			_, e := h.c.call(cancel, &Request{Op: OpSetlk, Node: node, Owner: uint64(i + 1), Flags: lkWait,
				Lock: Lock{Type: unix.F_WRLCK, End: 1<<63 - 1}})
			results <- e
		})
	}
	time.Sleep(300 * time.Millisecond)
	for range 5 {
		if _, e := h.doWithin(2*time.Second, &Request{Op: OpPing}); e != 0 {
			t.Fatalf("ping with %d lock waiters: %v", waiters, e)
		}
	}
	if _, e := h.doWithin(2*time.Second, &Request{Op: OpGetattr, Node: node}); e != 0 {
		t.Errorf("getattr with lock waiters: %v", e)
	}
	rp, e := h.doWithin(2*time.Second, &Request{Op: OpOpen, Node: node, Flags: unix.O_RDONLY})
	if e != 0 {
		t.Fatalf("open with lock waiters: %v", e)
	}
	if rd, e := h.doWithin(2*time.Second, &Request{Op: OpRead, Fh: rp.Fh, Size: 10}); e != 0 || string(rd.Data) != "x" {
		t.Errorf("read with lock waiters: %q, %v", rd.Data, e)
	}
	select {
	case e := <-results:
		t.Fatalf("a waiter returned %v while the host holds the lock", e)
	default:
	}
	close(cancel)
	wg.Wait()
	close(results)
	n := 0
	for e := range results {
		if e != syscall.EINTR {
			t.Errorf("interrupted waiter: %v", e)
		}
		n++
	}
	t.Logf("%d waiters interrupted", n)
}

// Past MaxLockWaits a blocking lock fails at once with ENOLCK.
func TestLockWaitBudget(t *testing.T) {
	h := newHostileOpts(t, ServerOptions{MaxLockWaits: 4})
	p := filepath.Join(h.share, "f")
	check(t, os.WriteFile(p, []byte("x"), 0o644))
	hf, err := os.OpenFile(p, os.O_RDWR, 0)
	check(t, err)
	defer hf.Close()
	check(t, unix.FcntlFlock(hf.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}))
	node, _ := h.lookup("f")
	cancel := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			h.c.call(cancel, &Request{Op: OpSetlk, Node: node, Owner: uint64(i + 1), Flags: lkWait, Lock: Lock{Type: unix.F_WRLCK, End: 1<<63 - 1}})
		})
	}
	time.Sleep(200 * time.Millisecond)
	_, e := h.doWithin(2*time.Second, &Request{Op: OpSetlk, Node: node, Owner: 99, Flags: lkWait, Lock: Lock{Type: unix.F_WRLCK, End: 1<<63 - 1}})
	if e != syscall.ENOLCK {
		t.Errorf("fifth waiter: %v, want ENOLCK", e)
	}
	close(cancel)
	wg.Wait()
}

// fdFlags returns the open flags of this process's descriptors that
// name path, O_PATH ones included.
func fdFlags(t *testing.T, path string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	check(t, err)
	var out []int
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || target != path {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				f, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				check(t, err)
				out = append(out, int(f))
			}
		}
	}
	return out
}

// A read-only share takes no locks on host files and opens none for
// writing, whatever the guest does.
func TestReadOnlyTakesNoHostLocks(t *testing.T) {
	s := newShare(t, shareOpts{readOnly: true})
	hp := filepath.Join(s.dir, "f")
	check(t, os.WriteFile(hp, []byte("ro"), 0o644))
	p := filepath.Join(s.mnt, "f")
	f1, err := os.Open(p)
	check(t, err)
	defer f1.Close()
	f2, err := os.Open(p)
	check(t, err)
	defer f2.Close()
	check(t, unix.Flock(int(f1.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	check(t, unix.FcntlFlock(f1.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_RDLCK}))
	// Locks still work between guest open files, in the guest kernel.
	mustErrno(t, unix.Flock(int(f2.Fd()), unix.LOCK_EX|unix.LOCK_NB), syscall.EWOULDBLOCK)
	// The host never saw them.
	hf, err := os.OpenFile(hp, os.O_RDWR, 0)
	check(t, err)
	defer hf.Close()
	check(t, unix.Flock(int(hf.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	check(t, unix.FcntlFlock(hf.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK}))
	check(t, unix.Flock(int(hf.Fd()), unix.LOCK_UN))
	check(t, unix.FcntlFlock(hf.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_UNLCK}))
	hf.Close()
	for _, fl := range fdFlags(t, hp) {
		if fl&unix.O_PATH == 0 && fl&unix.O_ACCMODE != unix.O_RDONLY {
			t.Errorf("the server holds %s open with flags %#o", hp, fl)
		}
	}

	// A hostile guest asking anyway is refused.
	h := newHostile(t, true)
	check(t, os.WriteFile(filepath.Join(h.share, "f"), []byte("ro"), 0o644))
	node, _ := h.lookup("f")
	rp, e := h.do(&Request{Op: OpOpen, Node: node, Flags: unix.O_RDONLY})
	if e != 0 {
		t.Fatal(e)
	}
	for _, rq := range []*Request{
		{Op: OpSetlk, Node: node, Fh: rp.Fh, Owner: 1, Lock: Lock{Type: unix.F_RDLCK, End: 1<<63 - 1}},
		{Op: OpSetlk, Node: node, Fh: rp.Fh, Owner: 1, Lock: Lock{Type: unix.F_WRLCK, End: 1<<63 - 1}, Flags: lkWait},
		{Op: OpSetlk, Node: node, Fh: rp.Fh, Lock: Lock{Type: unix.F_WRLCK}, Flags: lkFlock},
		{Op: OpGetlk, Node: node, Fh: rp.Fh, Owner: 1, Lock: Lock{Type: unix.F_WRLCK, End: 1<<63 - 1}},
	} {
		h.refuse(fmt.Sprintf("%v flags %d", rq.Op, rq.Flags), rq, syscall.ENOLCK)
	}
	for _, fl := range fdFlags(t, filepath.Join(h.share, "f")) {
		if fl&unix.O_PATH == 0 && fl&unix.O_ACCMODE != unix.O_RDONLY {
			t.Errorf("the server holds the file open with flags %#o", fl)
		}
	}
}
