package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// consoleSocket receives a container terminal's master from crun
// (--console-socket), as conmon does for podman: crun opens the pty inside
// the container, makes it the process's controlling terminal and sends
// the master here.
type consoleSocket struct {
	path string
	ln   *net.UnixListener
}

func newConsoleSocket(path string) (*consoleSocket, error) {
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	return &consoleSocket{path: path, ln: ln}, nil
}

// Close removes the socket.
func (s *consoleSocket) Close() error {
	return s.ln.Close() // unlinks path
}

// receive waits for crun to send the master, until timeout or until
// crunDone is closed (crun exited without sending one).
func (s *consoleSocket) receive(crunDone <-chan struct{}, timeout time.Duration) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := s.accept()
		ch <- result{f, err}
	}()
	select {
	case r := <-ch:
		return r.f, r.err
	case <-crunDone:
	case <-time.After(timeout):
	}
	s.ln.Close()
	if r := <-ch; r.f != nil {
		return r.f, nil
	}
	return nil, errors.New("crun sent no terminal")
}

func (s *consoleSocket) accept() (*os.File, error) {
	conn, err := s.ln.AcceptUnix()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("read console socket: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("read console socket: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	if len(fds) == 0 {
		return nil, errors.New("read console socket: no descriptor")
	}
	for _, fd := range fds[1:] {
		unix.Close(fd)
	}
	unix.CloseOnExec(fds[0])
	// Non-blocking, so reads take deadlines.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	return os.NewFile(uintptr(fds[0]), "console"), nil
}
