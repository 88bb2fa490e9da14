package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// DialVsock connects to guest port through Firecracker's vsock Unix
// socket: write "CONNECT <port>\n", read "OK <host port>\n". The returned
// conn carries the guest stream from the first byte after that line.
func DialVsock(ctx context.Context, uds string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", uds)
	if err != nil {
		return nil, fmt.Errorf("dial vsock %s port %d: %w", uds, port, err)
	}
	// Firecracker closes the connection, rather than answering, when no
	// guest listens, so a deadline bounds a guest that is not up yet.
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	c.SetDeadline(deadline)
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, fmt.Errorf("dial vsock %s port %d: %w", uds, port, err)
	}
	// Read byte by byte: anything after the newline is the guest's.
	var line []byte
	buf := make([]byte, 1)
	for len(line) < 64 {
		if _, err := c.Read(buf); err != nil {
			c.Close()
			return nil, fmt.Errorf("dial vsock %s port %d: no reply to CONNECT (is the guest listening?): %w", uds, port, err)
		}
		if buf[0] == '\n' {
			break
		}
		line = append(line, buf[0])
	}
	if _, err := ParseConnectReply(string(line)); err != nil {
		c.Close()
		return nil, fmt.Errorf("dial vsock %s port %d: %w", uds, port, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// ParseConnectReply parses Firecracker's answer to CONNECT (without the
// newline) and returns the host-side port it names.
func ParseConnectReply(line string) (uint32, error) {
	rest, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return 0, fmt.Errorf("vsock handshake: want \"OK <port>\", got %q", line)
	}
	n, err := strconv.ParseUint(rest, 10, 32)
	if err != nil {
		return 0, errors.New("vsock handshake: bad port in " + strconv.Quote(line))
	}
	return uint32(n), nil
}
