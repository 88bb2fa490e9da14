package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/fcvm/fcvm/internal/channel"
)

// listener yields handshaken connections from the host, one at a time.
type listener interface {
	// accept blocks until the host has completed a handshake.
	accept(lastGen uint64) (net.Conn, io.Reader, channel.Hello, error)
	Close() error
}

// serialListener serves the channel over a virtio-serial port (QEMU).
//
// The port is one byte stream for the VM's whole life, across host
// reconnects and snapshot restores. A restored clone's guest still runs the
// original's session when its new host connects and sends a Hello; the
// session's reader (channel.SessionReader) ends the session where the Hello
// starts, which no session data can pass for, and the Hello is kept for
// the next handshake, so a reconnect costs no timeout.
// Writes of an ended session are fenced off, so none of its bytes can
// follow the next handshake's answer.
type serialListener struct {
	name string

	f *os.File
	// pending holds input read but not yet consumed: the start of a new
	// Hello found inside a session.
	pending []byte
}

// fileConn adapts a session on the port to net.Conn.
type fileConn struct {
	l *serialListener
	r *channel.SessionReader

	mu     sync.Mutex // guards fenced and serialises writes
	fenced bool
	broken bool // read side: a new Hello was seen
}

func (c *fileConn) Read(p []byte) (int, error) {
	if c.broken {
		return 0, channel.ErrResync
	}
	n, err := c.r.Read(p)
	if errors.Is(err, channel.ErrResync) {
		c.l.pending = c.r.Rest()
		c.broken = true
	}
	return n, err
}

func (c *fileConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fenced {
		return 0, net.ErrClosed
	}
	return c.l.f.Write(p)
}

// Close fences the session's writes; the port itself stays open.
func (c *fileConn) Close() error {
	c.mu.Lock()
	c.fenced = true
	c.mu.Unlock()
	return nil
}

func (c *fileConn) LocalAddr() net.Addr                { return serialAddr{} }
func (c *fileConn) RemoteAddr() net.Addr               { return serialAddr{} }
func (c *fileConn) SetDeadline(t time.Time) error      { return c.l.f.SetDeadline(t) }
func (c *fileConn) SetReadDeadline(t time.Time) error  { return c.l.f.SetReadDeadline(t) }
func (c *fileConn) SetWriteDeadline(t time.Time) error { return c.l.f.SetWriteDeadline(t) }

type serialAddr struct{}

func (serialAddr) Network() string { return "virtio-serial" }
func (serialAddr) String() string  { return "fcvm.0" }

// portPath finds the /dev node of the virtio-serial port called name
// (without udev there is no /dev/virtio-ports symlink).
func portPath(name string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, _ := os.ReadDir("/sys/class/virtio-ports")
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join("/sys/class/virtio-ports", e.Name(), "name"))
			if err == nil && strings.TrimSpace(string(b)) == name {
				return "/dev/" + e.Name(), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("find virtio-serial port %q: not present", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// handshakeRW reads pending input first, then the port.
type handshakeRW struct {
	l *serialListener
}

func (h handshakeRW) Read(p []byte) (int, error) {
	if len(h.l.pending) > 0 {
		n := copy(p, h.l.pending)
		h.l.pending = h.l.pending[n:]
		return n, nil
	}
	return h.l.f.Read(p)
}

func (h handshakeRW) Write(p []byte) (int, error) { return h.l.f.Write(p) }

func (l *serialListener) accept(lastGen uint64) (net.Conn, io.Reader, channel.Hello, error) {
	if l.f == nil {
		path, err := portPath(l.name)
		if err != nil {
			return nil, nil, channel.Hello{}, err
		}
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, nil, channel.Hello{}, fmt.Errorf("open %s: %w", path, err)
		}
		l.f = f
	}
	for {
		h, r, err := channel.GuestHandshake(handshakeRW{l}, lastGen)
		if err == nil {
			c := &fileConn{l: l, r: r}
			return c, c, h, nil
		}
		// With no host connected, reads return 0 (EOF): wait and retry on
		// the same fd, which works again once the host connects.
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		return nil, nil, channel.Hello{}, err
	}
}

func (l *serialListener) Close() error {
	if l.f != nil {
		return l.f.Close()
	}
	return nil
}

// vsockListener serves the channel over vsock (Firecracker). Guest
// listeners survive snapshot restore; connections do not.
type vsockListener struct {
	ln *vsock.Listener
}

func newVsockListener(port uint32) (*vsockListener, error) {
	ln, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen vsock port %d: %w", port, err)
	}
	return &vsockListener{ln: ln}, nil
}

func (l *vsockListener) accept(lastGen uint64) (net.Conn, io.Reader, channel.Hello, error) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return nil, nil, channel.Hello{}, fmt.Errorf("accept vsock: %w", err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		h, r, err := channel.GuestHandshake(c, lastGen)
		if err != nil {
			c.Close()
			continue
		}
		c.SetDeadline(time.Time{})
		return c, r, h, nil
	}
}

func (l *vsockListener) Close() error { return l.ln.Close() }
