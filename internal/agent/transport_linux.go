package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
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
type serialListener struct {
	name string
}

// fileConn adapts a character device to net.Conn.
type fileConn struct{ *os.File }

func (fileConn) LocalAddr() net.Addr  { return serialAddr{} }
func (fileConn) RemoteAddr() net.Addr { return serialAddr{} }

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

func (l *serialListener) accept(lastGen uint64) (net.Conn, io.Reader, channel.Hello, error) {
	path, err := portPath(l.name)
	if err != nil {
		return nil, nil, channel.Hello{}, err
	}
	// A fresh open per session: closing the previous fd unblocks any
	// writer of the old session, so its stale bytes cannot follow the new
	// handshake.
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, channel.Hello{}, fmt.Errorf("open %s: %w", path, err)
	}
	conn := fileConn{f}
	for {
		h, r, err := channel.GuestHandshake(conn, lastGen)
		if err == nil {
			return conn, r, h, nil
		}
		// With no host connected, reads return 0 (EOF): wait and retry on
		// the same fd, which works again once the host connects.
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		f.Close()
		return nil, nil, channel.Hello{}, err
	}
}

func (l *serialListener) Close() error { return nil }

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
