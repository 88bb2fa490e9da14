package fusepipe

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrHostGone reports that the host side stopped answering: the
// connection closed or was silent for longer than the timeout. Every
// request on the mount fails with EIO from then on.
var ErrHostGone = errors.New("fusepipe: host side gone")

// errUnmounted is why the connection of an unmounted client is closed.
var errUnmounted = errors.New("fusepipe: unmounted")

// client multiplexes requests over one connection: any number of callers
// wait for their own reply while one goroutine reads them all.
type client struct {
	conn     net.Conn
	log      *slog.Logger
	readOnly bool // the server refuses changes

	wmu sync.Mutex // serialises frame writes on conn

	// mu guards the fields below.
	mu      sync.Mutex
	pending map[uint64]*call
	nextID  uint64
	err     error // why the connection is dead; nil while it lives

	dead     chan struct{} // closed when err is set
	lastRecv atomic.Int64  // unix nanoseconds of the last frame received
	readDone chan struct{}
}

type call struct {
	done chan struct{}
	rp   Reply
}

// dial performs the hello on conn and starts reading replies.
func dial(conn net.Conn, log *slog.Logger, writeback bool, timeout time.Duration) (*client, error) {
	var flags uint32
	if writeback {
		flags |= helloWriteback
	}
	// The hello must not hang forever on a peer that never answers; not
	// every net.Conn honours deadlines, so close it instead.
	t := time.AfterFunc(timeout, func() { conn.Close() })
	defer t.Stop()
	if _, err := conn.Write(appendFrame(nil, appendHello(nil, flags))); err != nil {
		return nil, fmt.Errorf("write hello: %w", err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	body, err := readFrame(br, nil)
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	sflags, err := parseHello(body)
	if err != nil {
		return nil, err
	}
	if !t.Stop() {
		return nil, fmt.Errorf("hello: %w", ErrHostGone)
	}
	c := &client{
		conn:     conn,
		log:      log,
		readOnly: sflags&helloReadOnly != 0,
		pending:  map[uint64]*call{},
		nextID:   1,
		dead:     make(chan struct{}),
		readDone: make(chan struct{}),
	}
	c.lastRecv.Store(time.Now().UnixNano())
	go c.readLoop(br)
	go c.watchdog(timeout)
	return c, nil
}

func (c *client) readLoop(br *bufio.Reader) {
	defer close(c.readDone)
	for {
		body, err := readFrame(br, nil)
		if err != nil {
			c.fail(err)
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		var rp Reply
		if err := DecodeReply(body, &rp); err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		cl, ok := c.pending[rp.ID]
		delete(c.pending, rp.ID)
		c.mu.Unlock()
		if ok {
			cl.rp = rp
			close(cl.done)
		}
	}
}

// watchdog pings the host and declares it gone when nothing at all has
// come back for timeout, so a hung host turns into EIO instead of hung
// guest processes.
func (c *client) watchdog(timeout time.Duration) {
	tick := time.NewTicker(timeout / 4)
	defer tick.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-tick.C:
		}
		if time.Since(time.Unix(0, c.lastRecv.Load())) > timeout {
			c.fail(fmt.Errorf("no answer for %v: %w", timeout, ErrHostGone))
			return
		}
		go c.call(nil, &Request{Op: OpPing})
	}
}

// fail marks the connection dead once, waking every waiting caller.
func (c *client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	close(c.dead)
	c.conn.Close()
	if err == errUnmounted {
		return
	}
	c.log.Warn("fusepipe: connection to host lost; the mount now fails with EIO", "err", err)
}

// Err returns why the connection died, or nil.
func (c *client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// call sends rq and waits for its reply. A closed cancel (the guest
// process was interrupted) is passed on to the host, which may then end
// the request early. The result is an errno, EIO if the host is gone.
func (c *client) call(cancel <-chan struct{}, rq *Request) (*Reply, syscall.Errno) {
	cl := &call{done: make(chan struct{})}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, syscall.EIO
	}
	rq.ID = c.nextID
	c.nextID++
	c.pending[rq.ID] = cl
	c.mu.Unlock()
	if err := c.send(rq); err != nil {
		c.fail(err)
		return nil, syscall.EIO
	}
	select {
	case <-cl.done:
	case <-c.dead:
		return nil, syscall.EIO
	case <-cancel:
		c.send(&Request{ID: rq.ID, Op: OpInterrupt})
		select {
		case <-cl.done:
		case <-c.dead:
			return nil, syscall.EIO
		}
	}
	if cl.rp.Errno != 0 {
		return &cl.rp, syscall.Errno(cl.rp.Errno)
	}
	return &cl.rp, 0
}

// notify sends a request that has no reply.
func (c *client) notify(rq *Request) {
	if c.Err() != nil {
		return
	}
	if err := c.send(rq); err != nil {
		c.fail(err)
	}
}

func (c *client) send(rq *Request) error {
	buf := AppendRequest(getBuf(), rq)
	c.wmu.Lock()
	_, err := c.conn.Write(buf)
	c.wmu.Unlock()
	putBuf(buf)
	return err
}

// close ends the connection and waits for the reader.
func (c *client) close() {
	c.fail(errUnmounted)
	<-c.readDone
}
