package uffd

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// client is one Firecracker process being served. Its goroutine owns every
// field except ctr, which Stats reads concurrently.
type client struct {
	s       *Server
	log     *slog.Logger
	id      uint64
	pid     int
	uffd    int
	pidfd   int
	started time.Time
	regions []Region   // sorted by address
	removed [][]uint64 // per region, a bit per page removed; nil until a remove
	last    int        // region of the last fault: faults cluster

	ctr        counters
	prefetched bool     // a working set was copied in ahead of faults
	record     bool     // append first-touch pages to order
	order      []extent // file pages in the order they were first faulted

	buf     []byte  // uffd_msg read buffer
	queue   []fault // faults read but not yet served
	fds     []unix.PollFd
	warned  bool // logged a fault outside every region
	removes bool // at least one range was removed
}

type fault struct {
	addr uint64
	read time.Time
}

// msgBatch is how many uffd_msgs one read takes. Faults arrive one per
// faulting thread (a vCPU, or Firecracker's own), so a small batch holds
// all that can be pending.
const msgBatch = 64

func newClient(s *Server, id uint64, pid, uffd, pidfd int, regions []Region) *client {
	rs := append([]Region(nil), regions...)
	sort.Slice(rs, func(a, b int) bool { return rs[a].BaseHostVirtAddr < rs[b].BaseHostVirtAddr })
	c := &client{
		s:       s,
		log:     s.log.With("client", id, "pid", pid),
		id:      id,
		pid:     pid,
		uffd:    uffd,
		pidfd:   pidfd,
		started: time.Now(),
		regions: rs,
		removed: make([][]uint64, len(rs)),
		record:  s.opts.RecordWorkingSet,
		buf:     make([]byte, msgBatch*msgSize),
	}
	c.fds = []unix.PollFd{
		{Fd: int32(uffd), Events: unix.POLLIN},
		{Fd: int32(pidfd), Events: unix.POLLIN},
		{Fd: int32(s.stopfd), Events: unix.POLLIN},
	}
	return c
}

func (c *client) close() {
	unix.Close(c.uffd)
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
	}
}

func (c *client) stats() ClientStats {
	st := ClientStats{ID: c.id, PID: c.pid, Started: c.started, Regions: len(c.regions)}
	c.ctr.snapshot(&st)
	return st
}

// errGone means the client's address space no longer exists.
var errGone = errors.New("client address space is gone")

// run serves c until it exits or the server closes, and says which.
func (c *client) run(ws []extent) string {
	if len(ws) > 0 {
		c.prefetched = true
		c.record = false
		start := time.Now()
		if reason := c.prefetch(ws); reason != "" {
			return reason
		}
		c.log.Debug("prefetched working set", "pages", c.ctr.prefetched.Load(), "took", time.Since(start))
	}
	for {
		if reason := c.wait(-1); reason != "" {
			return reason
		}
		if err := c.readAndServe(); err != nil {
			return err.Error()
		}
	}
}

// wait polls the userfaultfd, the pidfd and the server's stop eventfd. It
// returns why the client is done, or "" when the userfaultfd is readable
// (or the timeout passed).
func (c *client) wait(timeoutMS int) string {
	for {
		n, err := unix.Poll(c.fds, timeoutMS)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Sprintf("poll: %v", err)
		}
		switch {
		case n == 0:
			return ""
		case c.fds[2].Revents != 0:
			return "server closed"
		case c.fds[1].Revents != 0:
			return "client exited"
		case c.fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0:
			return "userfaultfd hung up"
		}
		return ""
	}
}

// readAndServe reads what the userfaultfd has and serves it.
func (c *client) readAndServe() error {
	if _, err := c.read(); err != nil {
		return err
	}
	return c.serveQueue()
}

// read takes one batch of messages off the userfaultfd. Removes are
// applied at once, so that a fault read in the same batch as the remove
// that precedes it is served zeros; faults are queued.
func (c *client) read() (bool, error) {
	n, err := unix.Read(c.uffd, c.buf)
	if err == unix.EAGAIN || err == unix.EINTR {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read userfaultfd: %w", err)
	}
	now := time.Now()
	for off := 0; off+msgSize <= n; off += msgSize {
		m := decodeMsg(c.buf[off : off+msgSize])
		switch m.event {
		case eventPagefault:
			c.queue = append(c.queue, fault{addr: m.a, read: now})
		case eventRemove:
			c.markRemoved(m.a, m.b)
		default:
			// Fork, remap and unmap events are not requested by
			// Firecracker; log rather than guess what they mean.
			c.log.Debug("ignoring userfaultfd event", "event", m.event)
		}
	}
	return n > 0, nil
}

func (c *client) serveQueue() error {
	// serve may read more and so grow the queue while we walk it.
	for i := 0; i < len(c.queue); i++ {
		if err := c.serve(c.queue[i]); err != nil {
			c.queue = c.queue[:0]
			return err
		}
	}
	c.queue = c.queue[:0]
	return nil
}

func (c *client) region(addr uint64) int {
	if r := c.regions[c.last]; addr-r.BaseHostVirtAddr < r.Size {
		return c.last
	}
	i := sort.Search(len(c.regions), func(i int) bool {
		r := c.regions[i]
		return r.BaseHostVirtAddr+r.Size > addr
	})
	if i < len(c.regions) && addr >= c.regions[i].BaseHostVirtAddr {
		c.last = i
		return i
	}
	return -1
}

func (c *client) markRemoved(start, end uint64) {
	for i, r := range c.regions {
		lo, hi := max(start, r.BaseHostVirtAddr), min(end, r.BaseHostVirtAddr+r.Size)
		if lo >= hi {
			continue
		}
		if c.removed[i] == nil {
			c.removed[i] = make([]uint64, (r.Size/r.PageSize+63)/64)
		}
		for p := (lo - r.BaseHostVirtAddr) / r.PageSize; p*r.PageSize < hi-r.BaseHostVirtAddr; p++ {
			c.removed[i][p/64] |= 1 << (p % 64)
		}
		c.removes = true
	}
}

func (c *client) isRemoved(ri int, page uint64) bool {
	b := c.removed[ri]
	return b != nil && b[page/64]&(1<<(page%64)) != 0
}

// serve resolves one fault: a copy from the memory file, or zeros for a
// page that was removed.
func (c *client) serve(f fault) error {
	ri := c.region(f.addr)
	if ri < 0 {
		if !c.warned {
			c.warned = true
			c.log.Warn("fault outside every region; the faulting thread stays blocked", "addr", fmt.Sprintf("%#x", f.addr))
		}
		return nil
	}
	r := c.regions[ri]
	dst := f.addr &^ (r.PageSize - 1)
	page := (dst - r.BaseHostVirtAddr) / r.PageSize
	for tries := 0; ; tries++ {
		zero := c.isRemoved(ri, page)
		var err error
		switch {
		case zero && r.PageSize == PageSize4K:
			_, err = ioctlZeropage(c.uffd, dst, r.PageSize)
		case zero:
			// UFFDIO_ZEROPAGE does not work on hugetlbfs.
			_, err = ioctlCopy(c.uffd, dst, addrOf(c.s.zeros), r.PageSize)
		default:
			off := r.Offset + dst - r.BaseHostVirtAddr
			if r.PageSize == PageSize2M {
				c.s.populate(off, r.PageSize)
			}
			_, err = ioctlCopy(c.uffd, dst, addrOf(c.s.mem[off:]), r.PageSize)
			if err == nil && c.record {
				c.order = append(c.order, extent{off, r.PageSize})
			}
		}
		switch err {
		case nil:
			c.ctr.bytes.Add(r.PageSize)
		case unix.EEXIST:
			// Already there: prefetched, or two threads faulted on it.
			// Wake in case a waiter raced with the copy that filled it.
			if err := ioctlWake(c.uffd, dst, r.PageSize); err != nil && err != unix.ESRCH {
				return fmt.Errorf("wake %#x: %w", dst, err)
			}
		case unix.EAGAIN:
			// The client's mappings are changing (a remove is queued):
			// take the event off the queue, then retry, which may now
			// mean zeros.
			if _, err := c.read(); err != nil {
				return err
			}
			if tries > 100 {
				runtime.Gosched()
			}
			continue
		case unix.ENOENT:
			// The client unmapped the range while the fault was queued;
			// nobody is waiting for it.
			return nil
		case unix.ESRCH:
			return errGone
		default:
			// Say so and keep serving the client's other threads: the
			// faulting one stays blocked, which is all that failing
			// here can mean.
			c.log.Error("copy page; the faulting thread stays blocked", "addr", fmt.Sprintf("%#x", dst), "err", err)
			return nil
		}
		c.ctr.faults.Add(1)
		if zero {
			c.ctr.zeroFaults.Add(1)
		}
		c.ctr.lat.record(time.Since(f.read))
		return nil
	}
}

func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

// prefetchChunk is the most one UFFDIO_COPY of the working set moves:
// large enough that ioctl overhead vanishes, small enough that a fault
// arriving meanwhile waits only tens of microseconds.
const prefetchChunk = 1 << 20

// prefetch copies the working set into the client in file order of first
// touch, serving the client's own faults between chunks. It returns why
// the client is done, or "".
func (c *client) prefetch(ws []extent) string {
	byOff := append([]Region(nil), c.regions...)
	sort.Slice(byOff, func(a, b int) bool { return byOff[a].Offset < byOff[b].Offset })
	for _, e := range ws {
		for off, end := e.off, e.off+e.len; off < end; {
			i := sort.Search(len(byOff), func(i int) bool { return byOff[i].Offset+byOff[i].Size > off })
			if i == len(byOff) || off < byOff[i].Offset {
				break // not in this client's regions
			}
			r := byOff[i]
			n := min(end, r.Offset+r.Size) - off
			n = min(n, max(prefetchChunk, r.PageSize))
			n -= n % r.PageSize
			if n == 0 {
				break
			}
			dst := r.BaseHostVirtAddr + off - r.Offset
			if err := c.copyRange(dst, off, n, r.PageSize); err != nil {
				return err.Error()
			}
			off += n
			if reason := c.wait(0); reason != "" {
				return reason
			}
			if c.fds[0].Revents&unix.POLLIN != 0 {
				if err := c.readAndServe(); err != nil {
					return err.Error()
				}
			}
		}
	}
	return ""
}

// copyRange copies n bytes of the file at off to dst, skipping pages that
// are already present or were removed.
func (c *client) copyRange(dst, off, n, ps uint64) error {
	for n > 0 {
		if c.removes {
			// Rare: go page by page so removed pages stay zero.
			if ri := c.region(dst); ri >= 0 && c.isRemoved(ri, (dst-c.regions[ri].BaseHostVirtAddr)/ps) {
				dst, off, n = dst+ps, off+ps, n-ps
				continue
			}
		}
		step := n
		if c.removes {
			step = ps
		}
		if ps == PageSize2M {
			c.s.populate(off, step)
		}
		done, err := ioctlCopy(c.uffd, dst, addrOf(c.s.mem[off:]), step)
		c.ctr.bytes.Add(done)
		c.ctr.prefetched.Add(done / ps)
		dst, off, n = dst+done, off+done, n-done
		switch err {
		case nil:
		case unix.EEXIST:
			dst, off, n = dst+ps, off+ps, n-ps
		case unix.EAGAIN:
			if err := c.readAndServe(); err != nil {
				return err
			}
		case unix.ENOENT:
			return nil // unmapped meanwhile: the rest of the chunk is gone too
		case unix.ESRCH:
			return errGone
		default:
			return fmt.Errorf("prefetch %#x: %w", dst, err)
		}
	}
	return nil
}
