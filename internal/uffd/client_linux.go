package uffd

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// client is one Firecracker process being served. Its goroutine owns every
// field except ctr, which Stats reads concurrently, and doneR, which watch
// sets (watch also reads the descriptors, which live until close).
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
	warned  bool    // logged a fault outside every region
	removes bool    // at least one range was removed

	// How a client waits for faults depends on how many are served
	// (see waitRead). watch polls for the rest (client exit, server
	// stop, hang-up) and ends a wait through wakeEv and a read deadline.
	file      *os.File        // the userfaultfd
	raw       syscall.RawConn // of file
	doneR     atomic.Pointer[string]
	wakeEv    int           // eventfd: readable once finish was called
	watchEv   int           // eventfd that ends watch
	watchDone chan struct{} // closed when watch returns
	pfds      []unix.PollFd // uffd and wakeEv, for a blocking wait
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
	return c
}

// start registers the userfaultfd with the netpoller and starts watch.
func (c *client) start() error {
	if err := unix.SetNonblock(c.uffd, true); err != nil {
		return fmt.Errorf("userfaultfd: %w", err)
	}
	c.file = os.NewFile(uintptr(c.uffd), "userfaultfd")
	raw, err := c.file.SyscallConn()
	if err != nil {
		return fmt.Errorf("userfaultfd: %w", err)
	}
	c.raw = raw
	if c.wakeEv, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	if c.watchEv, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		unix.Close(c.wakeEv)
		return fmt.Errorf("eventfd: %w", err)
	}
	c.pfds = []unix.PollFd{{Fd: int32(c.uffd), Events: unix.POLLIN}, {Fd: int32(c.wakeEv), Events: unix.POLLIN}}
	c.watchDone = make(chan struct{})
	go c.watch()
	return nil
}

// watch waits for the client to exit, the server to stop or the
// userfaultfd to hang up, records why, and wakes the serving goroutine.
func (c *client) watch() {
	defer close(c.watchDone)
	fds := []unix.PollFd{
		{Fd: int32(c.uffd), Events: 0}, // POLLHUP and POLLERR only
		{Fd: int32(c.pidfd), Events: unix.POLLIN},
		{Fd: int32(c.s.stopfd), Events: unix.POLLIN},
		{Fd: int32(c.watchEv), Events: unix.POLLIN},
	}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		switch {
		case err != nil:
			c.finish(fmt.Sprintf("poll: %v", err))
		case fds[3].Revents != 0:
			return // close: the serving goroutine is done
		case fds[2].Revents != 0:
			c.finish("server closed")
		case fds[1].Revents != 0:
			c.finish("client exited")
		case fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0:
			c.finish("userfaultfd hung up")
		default:
			continue
		}
		return
	}
}

// finish records why c is done (the first reason wins) and wakes a wait.
func (c *client) finish(reason string) {
	if c.doneR.CompareAndSwap(nil, &reason) {
		unix.Write(c.wakeEv, one)
		c.file.SetReadDeadline(time.Unix(1, 0))
	}
}

func (c *client) done() string {
	if r := c.doneR.Load(); r != nil {
		return *r
	}
	return ""
}

func (c *client) close() {
	if c.file != nil {
		if c.watchDone != nil {
			unix.Write(c.watchEv, one)
			<-c.watchDone
			unix.Close(c.watchEv)
			unix.Close(c.wakeEv)
		}
		c.file.Close()
	} else {
		unix.Close(c.uffd)
	}
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
		got, err := c.waitRead()
		if r := c.done(); r != "" {
			return r
		}
		if err != nil {
			return err.Error()
		}
		if got {
			if err := c.serveQueue(); err != nil {
				return err.Error()
			}
		}
	}
}

// one is an eventfd increment.
var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}

// waitRead waits until the userfaultfd has messages, reads one batch and
// queues its faults. It returns false when woken without messages (finish
// was called).
//
// While there are no more clients than Ps, each waits in poll(2) on its
// own thread, which wakes fastest. With more, a thread per client means a
// thread wake-up and a context switch per fault on few CPUs, so clients
// park in Go's netpoller and the runtime's few threads serve them all:
// measured here (2 CPUs), eight 4 KiB clients went from 80% of the C
// handler's pages per second to 110-124%, and one client stays at 93-98%
// (parking it in the netpoller cost it 15%).
func (c *client) waitRead() (bool, error) {
	if c.s.serving.Load() <= int64(runtime.GOMAXPROCS(0)) {
		for {
			_, err := unix.Poll(c.pfds, -1)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return false, fmt.Errorf("poll userfaultfd: %w", err)
			}
			if c.pfds[1].Revents != 0 {
				return false, nil
			}
			return c.read()
		}
	}
	var got bool
	var rerr error
	err := c.raw.Read(func(uintptr) bool {
		got, rerr = c.read()
		return got || rerr != nil
	})
	if rerr != nil {
		return false, rerr
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, fmt.Errorf("wait for userfaultfd: %w", err)
	}
	return got, nil
}

// readAndServe reads what the userfaultfd has, without waiting, and
// serves it.
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
			if r := c.done(); r != "" {
				return r
			}
			// The client's own faults meanwhile, without waiting.
			if got, err := c.read(); err != nil {
				return err.Error()
			} else if got {
				if err := c.serveQueue(); err != nil {
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
