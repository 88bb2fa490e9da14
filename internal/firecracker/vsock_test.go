package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeVsockMux plays Firecracker's side of a host-initiated vsock
// connection on a Unix socket: read "CONNECT <port>\n", answer "OK <n>\n"
// if a guest listens on port, else close. Then it echoes, standing in for
// the guest.
func fakeVsockMux(t *testing.T, listening uint32) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vsock.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(io.LimitReader(c, 32)).ReadString('\n')
				if err != nil {
					return
				}
				var port uint32
				if _, err := fmt.Sscanf(line, "CONNECT %d\n", &port); err != nil || port != listening {
					return
				}
				// The guest's first bytes follow the OK line at once.
				fmt.Fprintf(c, "OK 1073741824\nhello from guest\n")
				io.Copy(c, c)
			}()
		}
	}()
	return path
}

func TestDialVsock(t *testing.T) {
	uds := fakeVsockMux(t, ChannelPort)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialVsock(ctx, uds, ChannelPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "hello from guest\n" {
		t.Fatalf("first guest bytes %q, %v (handshake ate them?)", line, err)
	}
	fmt.Fprintf(c, "ping\n")
	if line, _ := r.ReadString('\n'); line != "ping\n" {
		t.Errorf("echo %q", line)
	}

	// Nobody on the port: Firecracker closes the connection.
	if _, err := DialVsock(ctx, uds, 52); err == nil || !strings.Contains(err.Error(), "is the guest listening") {
		t.Errorf("dial to a closed port: %v", err)
	}
}

func TestParseConnectReply(t *testing.T) {
	if n, err := ParseConnectReply("OK 1073741824"); err != nil || n != 1073741824 {
		t.Errorf("got %d, %v", n, err)
	}
	for _, bad := range []string{"", "OK", "OK ", "ok 1", "OK -1", "OK 99999999999", "ERR 1", "OK 1 2"} {
		if _, err := ParseConnectReply(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseConnectReply(f *testing.F) {
	for _, s := range []string{"OK 1024", "OK 0", "", "OK x", "OK 4294967296"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseConnectReply(s)
		if err == nil && s != fmt.Sprintf("OK %d", n) && !strings.HasPrefix(s, "OK +") && !strings.HasPrefix(s, "OK 0") {
			t.Fatalf("ParseConnectReply(%q) = %d, but that does not print back", s, n)
		}
	})
}

// FuzzAPIError: any response body becomes an error carrying a message,
// and a documented error body carries its fault_message exactly.
func FuzzAPIError(f *testing.F) {
	f.Add([]byte(`{"fault_message":"Invalid request method"}`), 400)
	f.Add([]byte(`not json`), 500)
	f.Add([]byte(``), 404)
	f.Fuzz(func(t *testing.T, body []byte, status int) {
		e := newAPIError(Request{Method: "PUT", Path: "/x"}, status, body)
		_ = e.Error()
		var b apiError
		if json.Unmarshal(body, &b) == nil && b.FaultMessage != "" && e.FaultMessage != b.FaultMessage {
			t.Fatalf("fault message %q, want %q", e.FaultMessage, b.FaultMessage)
		}
	})
}
