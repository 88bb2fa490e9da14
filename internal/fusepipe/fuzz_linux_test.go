package fusepipe

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// FuzzServer is a hostile guest sending valid frames in any order, with
// node IDs and handles it was given or made up: the server must not
// panic, hang, reach outside the share, leave anything privileged on the
// host, or hold more descriptors than its caps allow. The seeds run as
// part of go test; go test -fuzz=FuzzServer explores further.
func FuzzServer(f *testing.F) {
	// Every op once from the root, then sequences that look up,
	// create, open and lock and then use what they got.
	var all []byte
	for op := range byte(opMax - OpPing) {
		all = append(all, op, 0, op*19)
	}
	f.Add(all)
	f.Add([]byte{1, 0, 0, 1, 0, 1, 1, 0, 2, 1, 0, 3, 5, 1, 0, 5, 2, 8, 7, 0, 0, 6, 0, 5, 8, 0, 0, 4, 3, 1, 27, 4, 0, 27, 4, 2, 4, 5, 255})
	f.Add([]byte{6, 0, 5, 28, 1, 1, 28, 2, 0x29, 28, 3, 0x2a, 28, 4, 0x31, 28, 5, 0x32, 3, 1, 0, 10, 1, 0, 15, 1, 5})
	f.Add([]byte{15, 0, 3, 15, 0, 4, 16, 0, 5, 14, 0, 11, 1, 0, 11, 18, 1, 2, 20, 0, 11, 21, 0, 0, 22, 1, 0, 11, 0, 0, 12, 0, 0})
	f.Add([]byte{0xff, 1, 0, 0, 5, 1, 2, 28, 1, 0x29, 6, 0, 5, 3, 1, 3, 25, 1, 0})
	f.Add(slices.Repeat([]byte{1, 0, 0, 12, 0, 0, 1, 0, 1, 11, 0, 0, 2, 1, 1, 32, 2, 3}, 30))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzSession(t, data)
	})
}

var fuzzNames = []string{"a", "sub", "fifo", "null", "up", "new", "..", ".", "", "x/y", "../secret", "sub2", "lnk"}

func fuzzSession(t *testing.T, data []byte) {
	base := t.TempDir()
	share := filepath.Join(base, "share")
	check(t, os.Mkdir(share, 0o755))
	secret := filepath.Join(base, "secret")
	check(t, os.WriteFile(secret, []byte(secretText), 0o644))
	check(t, os.WriteFile(filepath.Join(share, "a"), []byte("inside"), 0o644))
	check(t, os.Mkdir(filepath.Join(share, "sub"), 0o755))
	check(t, unix.Mkfifo(filepath.Join(share, "fifo"), 0o666))
	check(t, unix.Mknod(filepath.Join(share, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	check(t, os.Symlink("../secret", filepath.Join(share, "up")))

	before := openFds(t)
	opts := ServerOptions{MaxNodes: 32, MaxHandles: 16, MaxLockOwners: 8, MaxLockWaits: 8, ReadOnly: len(data) > 0 && data[0] == 0xff}
	c, stop := serveWire(t, share, opts)

	nodes := []uint64{rootNode}
	var fhs []uint64
	var sent, ok int
	// Three bytes make a request: the op and two that choose its
	// fields among the nodes and handles handed out so far, a few names
	// (some hostile) and modes (some privileged), so short inputs reach
	// deep sequences.
	pick := func(s []uint64, b byte) uint64 {
		if len(s) == 0 || b >= 250 {
			return uint64(b) * 7919 // made up
		}
		return s[int(b)%len(s)]
	}
	modes := []uint32{0o644, 0o4755, 0o6777, unix.S_IFIFO | 0o666, unix.S_IFCHR | 0o666, unix.S_IFSOCK | 0o1777, unix.S_IFREG | 0o2755, 0o7777}
	flags := []uint32{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR | unix.O_TRUNC, unix.O_RDWR | unix.O_EXCL, unix.O_WRONLY | unix.O_APPEND, lkWait, lkFlock | lkWait, 1}
	for len(data) >= 3 {
		sent++
		op := Op(data[0]%uint8(opMax-OpPing)) + OpPing
		a, b := data[1], data[2]
		data = data[3:]
		rq := &Request{Op: op, Node: pick(nodes, a), Node2: pick(nodes, b>>2), Fh: pick(fhs, b), Fh2: pick(fhs, a>>1),
			Name: fuzzNames[int(b)%len(fuzzNames)], Name2: fuzzNames[int(a>>3)%len(fuzzNames)],
			Mode: modes[int(a)%len(modes)], Flags: flags[int(b>>3)%len(flags)],
			Off: uint64(a) << 9, Size: uint32(b) << 8, Owner: uint64(a%5 + 1), Valid: uint32(a) | uint32(b)<<8,
			UID: uint32(b) * 13, GID: uint32(a) * 7, Caller: Owner{uint32(a%3) * 1000, uint32(b % 3)},
			Lock: Lock{Type: uint32(b % 3), Start: uint64(a >> 4), End: 1<<63 - 1}}
		switch op {
		case OpWrite, OpSetxattr:
			rq.Data = []byte("\x01\x00\x00\x02\xff\xff\xff\xff")
			if a%2 == 0 {
				rq.Name = [...]string{"security.capability", "trusted.x", overrideXattr, "user.x"}[b%4]
			}
		case OpForget:
			rq.Forgets = []Forget{{Node: rq.Node, N: uint64(b)}}
		}
		// Anything may block (a lock another owner holds): interrupt
		// what has not answered in 100ms, as a guest's signal would.
		cancel := make(chan struct{})
		t0 := time.AfterFunc(100*time.Millisecond, func() { close(cancel) })
		var rp *Reply
		var e syscall.Errno
		if op.hasReply() {
			rp, e = c.call(cancel, rq)
		} else {
			c.notify(rq)
		}
		t0.Stop()
		if rp != nil && e == 0 {
			ok++
			if rp.Entry.Node != 0 {
				nodes = append(nodes, rp.Entry.Node)
			}
			if rp.Fh != 0 {
				fhs = append(fhs, rp.Fh)
			}
			for _, de := range rp.Dirents {
				if de.Entry.Node != 0 {
					nodes = append(nodes, de.Entry.Node)
				}
			}
		}
		if c.Err() != nil {
			t.Fatalf("connection died at %v: %v", op, c.Err())
		}
	}
	if _, e := c.call(nil, &Request{Op: OpPing}); e != 0 {
		t.Fatalf("ping at the end: %v", e)
	}
	t.Logf("%d requests, %d answered without error, %d nodes and %d handles handed out", sent, ok, len(nodes)-1, len(fhs))
	limit := opts.MaxNodes + opts.MaxHandles + opts.MaxLockOwners + 4 // socket, root, /proc/self/fd, a reopen in flight
	if n := openFds(t) - before; n > limit {
		t.Errorf("%d descriptors held, caps allow %d", n, limit)
	}
	stop()
	if n := openFds(t) - before; n > 0 {
		t.Errorf("%d descriptors left after the server closed", n)
	}
	if got, err := os.ReadFile(secret); err != nil || string(got) != secretText {
		t.Errorf("secret now %q, %v", got, err)
	}
	ents, err := os.ReadDir(base)
	check(t, err)
	if len(ents) != 2 {
		t.Errorf("%d entries beside the share, want share and secret", len(ents))
	}
	noHostPrivilege(t, share)
}
